"""Build the docs site into `_docs/` without Quarto: `python tools/docs.py [--out DIR]`, then open `_docs/index.html`
(search needs it served: `python -m http.server -b 127.0.0.1 -d _docs`, then open http://127.0.0.1:8000/)

nbdev does its own processing first (what `nbdev-docs` does before it calls Quarto): `show_doc` rendered into markdown
outputs, `#| hide` and `#| export` applied, doc links added, the title cell turned into frontmatter; it writes `_proc/`.
nbconvert's `HTMLExporter` then renders each processed page with `tools/docs_template/` (nbconvert's lab template
plus a sidebar). This file only prepares notebooks for nbconvert, builds the sidebar from the one in `nbs/_quarto.yml`
(the list Quarto uses), and points links at the generated pages. Each page also gets a table of contents (its h2 and
h3 headings) and previous/next links in the sidebar's order.

The browser assets come from npm (`tools/docs_assets/package.json`, installed with `npm ci --prefix tools/docs_assets`)
rather than from CDNs, so the site works offline: Mermaid renders the diagrams of pages that have some, and Pagefind
indexes the built site for the sidebar's full-text search.
"""
import html, json, os, posixpath, re, shutil, subprocess
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat, yaml
from fastcore.script import call_parse
from nbconvert import HTMLExporter
from nbdev.config import get_config
import nbdev.quarto as nbq

tmpl_dir = Path(__file__).resolve().parent/'docs_template'
assets_dir = Path(__file__).resolve().parent/'docs_assets'
mermaid_js = 'mermaid/dist/mermaid.min.js'  # the self-contained browser build, in node_modules
pagefind_bin = '.bin/pagefind'

def node_modules() -> Path:
    "`tools/docs_assets/node_modules`, after checking it has what the site needs"
    nm = assets_dir/'node_modules'
    if not all((nm/f).exists() for f in (mermaid_js, pagefind_bin)):
        raise SystemExit(f'{nm} lacks Mermaid or Pagefind, which the docs need: run `npm ci --prefix tools/docs_assets`')
    return nm

def proc_nbs() -> Path:
    "Run nbdev's docs processing (`nbdev-proc-nbs`) into `_proc/`, which it returns"
    # nbdev-proc-nbs starts by calling `_ensure_quarto`, which, where Quarto is missing, runs `sudo` to download and
    # install it. Building docs must not install software, so that one step is skipped; fail if nbdev renames it.
    assert hasattr(nbq, '_ensure_quarto'), "nbdev changed: check what nbdev_proc_nbs does before skipping a step"
    ensure, nbq._ensure_quarto = nbq._ensure_quarto, lambda: None
    try: nbq.nbdev_proc_nbs.__wrapped__()
    finally: nbq._ensure_quarto = ensure
    return get_config().config_path/'_proc'

## Pages

_re_fm = re.compile(r'\A---\s*\n(.*?)\n---\s*(?:\n|\Z)', re.S)

def split_fm(text:str) -> tuple[dict, str]:
    "The YAML frontmatter of `text` and the rest of it"
    m = _re_fm.match(text.lstrip())
    return (yaml.safe_load(m[1]) or {}, text.lstrip()[m.end():]) if m else ({}, text)

class Page:
    "One page of the site: its source `src` (relative to `nbs/`), output `out`, title, description and notebook"
    def __init__(self, cache:Path, src:str):
        self.src = src
        p = cache/src
        if p.suffix == '.qmd':
            # A .qmd page is markdown: as a one-cell notebook it goes through the same nbconvert exporter, so it gets
            # nbconvert's markdown renderer (mistune), highlighting and template; no second markdown library needed
            self.fm, body = split_fm(p.read_text())
            self.nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(body)])
        else:
            self.nb = json.loads(p.read_text())
            cells = self.nb['cells']
            # nbdev puts the title, description and output file in a frontmatter raw cell at the top
            self.fm = split_fm(''.join(cells[0]['source']))[0] if cells and cells[0]['cell_type'] == 'raw' else {}
            if self.fm: cells.pop(0)
        self.title = str(self.fm.get('title') or Path(src).stem)
        self.description = self.fm.get('description') or ''
        self.out = posixpath.join(posixpath.dirname(src), self.fm.get('output-file') or Path(src).with_suffix('.html').name)

def find_pages(cache:Path) -> dict[str, Page]:
    "Every notebook and .qmd page nbdev processed, by source path"
    srcs = sorted(p.relative_to(cache).as_posix() for p in cache.rglob('*') if p.suffix in ('.ipynb', '.qmd'))
    return {s: Page(cache, s) for s in srcs if not any(o[0] in '_.' for o in Path(s).parts)}

def glob_pages(pages:dict, pattern:str, folder:str='') -> list[Page]:
    "Pages whose source matches the Quarto glob `pattern`, relative to `folder`, in file name order"
    pat = posixpath.normpath(posixpath.join(folder, pattern))
    return [p for s, p in sorted(pages.items()) if Path(s).match(pat) and len(Path(s).parts) == len(Path(pat).parts)]

## Preparing notebooks for nbconvert

_re_attr_link = re.compile(r'\[([^\]]*)\]\(([^)\s]+)\)\{([^}]*)\}')

def attr_links(md:str) -> str:
    "Pandoc's `[text](url){attrs}` (show_doc's source links) as HTML links; source links go where there is a repository URL"
    # Without `[project.urls] Repository`, nbdev still writes source links, as `/blob/main/...`: they lead nowhere
    def f(m): return f'<a href="{m[2]}" {m[3]}>{m[1]}</a>' if re.match(r'https?://', m[2]) else ''
    return _re_attr_link.sub(f, md)

_re_opt = re.compile(r'^#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')

def prep_cell(cell:dict) -> dict|None:
    "`cell` as nbconvert expects it, with Quarto's `#|` options applied and their lines hidden; `None` to leave it out"
    cell.pop('has_sd', None)  # nbdev's marker for show_doc cells; not in the notebook format
    cell.get('metadata', {}).pop('execution', None)
    if cell['cell_type'] == 'markdown': cell['source'] = attr_links(''.join(cell['source']))
    if cell['cell_type'] != 'code': return cell
    for o in cell.get('outputs', []):
        if 'text/markdown' in o.get('data', {}): o['data']['text/markdown'] = attr_links(''.join(o['data']['text/markdown']))
    lines, opts = ''.join(cell['source']).splitlines(), {}
    while lines and (m := _re_opt.match(lines[0])):
        opts[m[1]] = m[2].lower()
        lines.pop(0)
    if opts.get('include') == 'false': return None
    if opts.get('output') == 'false': cell['outputs'] = []
    cell['source'] = '' if opts.get('echo') == 'false' else '\n'.join(lines).strip()
    if not cell['source']: cell['metadata']['transient'] = {'remove_source': True}  # nbconvert's flag for "no input"
    return cell if cell['source'] or cell['outputs'] else None

def listing_md(page:Page, pages:dict) -> str:
    "A markdown table for a Quarto `listing` (title and description of each page it matches)"
    lst = page.fm.get('listing')
    if not lst: return ''
    pats = lst.get('contents', '*') if isinstance(lst, dict) else '*'
    folder = posixpath.dirname(page.src)
    rows = [p for pat in ([pats] if isinstance(pats, str) else pats) for p in glob_pages(pages, pat, folder) if p is not page]
    esc = lambda s: str(s).replace('|', r'\|').replace('\n', ' ')
    return '\n\n| Page | Description |\n|---|---|\n' + ''.join(
        f'| [{esc(p.title)}]({posixpath.relpath(p.src, folder)}) | {esc(p.description)} |\n' for p in rows)

def prep_nb(page:Page, pages:dict):
    "The page's notebook, cleaned of nbdev-only fields, ready for nbconvert"
    nb = page.nb
    nb.get('metadata', {}).pop('execution', None)
    nb['cells'] = [c for c in map(prep_cell, nb['cells']) if c]
    if page.fm.get('listing'): nb['cells'].append(nbformat.v4.new_markdown_cell(listing_md(page, pages)))
    for i, c in enumerate(nb['cells']): c.setdefault('id', f'cell-{i}')
    nb = nbformat.reads(json.dumps(nb), as_version=4)  # joins nbdev's line lists the way nbconvert expects
    nbformat.validate(nb)
    return nb

## Navigation and links

def nav_items(entries, pages:dict, page:Page) -> list[dict]:
    "The sidebar from Quarto's `website.sidebar.contents`, as links from `page`"
    def link(src, text=None):
        p = pages.get(src)
        if p is None: return None
        return dict(text=text or p.title, href=relpath(p.out, page.out), active=p is page)
    res = []
    for e in entries:
        if isinstance(e, str):
            res += [link(p.src) for p in glob_pages(pages, e)] if '*' in e else [link(e)]
        elif 'section' in e:
            sub = e.get('contents', [])
            sec = dict(text=e['section'], section=True, pages=nav_items([sub] if isinstance(sub, str) else sub, pages, page))
            if (href := e.get('href')) and (l := link(href, e['section'])): sec.update(href=l['href'], active=l['active'])
            res.append(sec)
        elif 'href' in e: res.append(link(e['href'], e.get('text')))
    return [o for o in res if o]

def walk_nav(nav:list[dict]):
    "The sidebar's links in reading order: a section's own page before its pages"
    for item in nav:
        if item.get('href'): yield item
        yield from walk_nav(item.get('pages', []))

def prev_next(nav:list[dict]) -> tuple[dict|None, dict|None]:
    "The sidebar links before and after the current page"
    items = list(walk_nav(nav))
    i = next((i for i, o in enumerate(items) if o['active']), None)
    if i is None: return None, None
    return items[i-1] if i else None, items[i+1] if i+1 < len(items) else None

_re_heading = re.compile(r'<h([23])\b[^>]*\sid="([^"]+)"[^>]*>(.*?)</h\1>', re.S)

def toc(doc:str) -> list[dict]:
    "The table of contents of a rendered page: level, id and text of its h2 and h3 headings"
    def text(h): return html.unescape(re.sub(r'<[^>]+>', '', re.sub(r'<a class="anchor-link".*?</a>', '', h))).strip()
    return [dict(level=int(m[1]), id=m[2], text=text(m[3])) for m in _re_heading.finditer(doc)]

def relpath(target:str, page_out:str) -> str: return posixpath.relpath(target, posixpath.dirname(page_out) or '.')

def slug(s:str) -> str:
    "Pandoc's identifier for a heading (the one Quarto gives it and nbdev's doc links use), from nbconvert's"
    s = re.sub(r'[^\w.-]', '', unquote(html.unescape(s)).lower().replace(' ', '-'))
    return re.sub(r'^[\W\d_]+', '', s) or 'section'

class Links:
    "Rewrite links in generated HTML so links to notebooks and to the hosted docs point at the generated pages"
    def __init__(self, pages:dict):
        cfg = get_config()
        self.outs = {p.out for p in pages.values()}
        self.by_src = {p.src: p.out for p in pages.values()}
        base = f"/{cfg.get('doc_baseurl', '/').strip('/')}/".replace('//', '/')
        host = (cfg.get('doc_host') or '').rstrip('/')
        # nbdev's doc links are `{doc_host}{doc_baseurl}api/core.html#name`: both forms mean "this site"
        self.prefixes = ([host + base] if host else []) + [base]
        self.broken = set()

    def href(self, href:str, page_out:str) -> str:
        h = html.unescape(href)
        if h.startswith('#'): return '#' + slug(h[1:])
        u = urlsplit(h)
        pre = next((p for p in self.prefixes if h.startswith(p)), None)
        if pre: target = unquote(urlsplit(h[len(pre):]).path) or 'index.html'
        elif u.scheme or u.netloc or h.startswith('/'): return href
        else: target = posixpath.join(posixpath.dirname(page_out), unquote(u.path))
        target = posixpath.normpath(target)
        target = self.by_src.get(target, target)
        if target not in self.outs:
            if Path(target).suffix in ('.ipynb', '.qmd', '.html', '.md'): self.broken.add((page_out, href))
            return href
        return html.escape(relpath(target, page_out) + ('#' + slug(u.fragment) if u.fragment else ''))

    def __call__(self, doc:str, page_out:str) -> str:
        "`doc` with heading ids made Pandoc's and every link's `href` pointed at the generated pages"
        # Only real tags match: a `<` in text (code, outputs) is escaped as `&lt;`
        seen = Counter()
        def uniq(a):
            "Pandoc's rule for headings with the same text: the second gets `-1`, the next `-2`, ..."
            i = slug(a[2])
            seen[i] += 1
            return a[1] + (f'{i}-{seen[i]-1}' if seen[i] > 1 else i) + a[3]
        ids = lambda m: re.sub(r'(\sid=")([^"]*)(")', uniq, m[0])
        hrefs = lambda m: re.sub(r'(\shref=")([^"]*)(")', lambda a: a[1] + self.href(a[2], page_out) + a[3], m[0])
        return re.sub(r'<a\b[^>]*>', hrefs, re.sub(r'<h[1-6]\b[^>]*>', ids, doc))

## The site

def copy_files(cache:Path, out:Path, nm:Path):
    "Files pages refer to (images, ...), the stylesheet and the Mermaid script into the site"
    # nbdev's own config and the Quarto stylesheet are not needed here
    for f in cache.rglob('*'):
        rel = f.relative_to(cache)
        if f.is_file() and f.suffix not in ('.ipynb', '.qmd', '.yml', '.yaml') and not any(o[0] in '_.' for o in rel.parts):
            (out/rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, out/rel)
    shutil.copy2(tmpl_dir/'site.css', out/'site.css')
    (out/'assets').mkdir(exist_ok=True)
    shutil.copy2(nm/mermaid_js, out/'assets'/Path(mermaid_js).name)

def index_search(out:Path, nm:Path):
    "Pagefind's full-text index and search UI, in `out/pagefind/`"
    # `_` counts as a letter so that names such as `redir_url` are found whole; headings' `¶` links are not text
    subprocess.run([nm/pagefind_bin, '--site', out, '--keep-index-url', '--include-characters', '_',
                    '--exclude-selectors', 'a.anchor-link', '--quiet'], check=True)

def build(out=None, cache:Path=None) -> Path:
    "Build the site into `out` (default: nbdev's `doc_path`, `_docs/`) and return it"
    cfg = get_config()
    out = Path(out or cfg.doc_path).absolute()
    if out.exists() and any(out.iterdir()) and out != cfg.doc_path and not (out/'site.css').exists():
        raise SystemExit(f'{out} is not empty and not a docs build: refusing to replace it')
    nm = node_modules()
    cache = cache or proc_nbs()
    pages = find_pages(cache)
    if not pages: raise SystemExit(f'no pages found in {cache}')
    sidebar = yaml.safe_load((cfg.nbs_path/'_quarto.yml').read_text())['website']['sidebar']['contents']
    exporter = HTMLExporter(template_name=tmpl_dir.name, extra_template_basedirs=[str(tmpl_dir.parent)],
                            exclude_input_prompt=True, exclude_output_prompt=True)
    links = Links(pages)
    shutil.rmtree(out, ignore_errors=True)
    for p in pages.values():
        nb = prep_nb(p, pages)
        nb.metadata['title'] = f'{p.title} – {cfg.title}'
        nav = nav_items(sidebar, pages, p)
        site = dict(title=cfg.title, root='../' * p.out.count('/'), page_title=p.title, description=p.description,
                    nav=nav, prev_next=prev_next(nav))
        # The table of contents and whether to load Mermaid depend on the rendered page, so it is rendered twice
        doc = links(exporter.from_notebook_node(nb, resources=dict(site=site))[0], p.out)
        site.update(toc=toc(doc), mermaid='class="mermaid"' in doc)
        doc, _ = exporter.from_notebook_node(nb, resources=dict(site=site))
        (dest := out/p.out).parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(links(doc, p.out))
    copy_files(cache, out, nm)
    index_search(out, nm)
    for page_out, href in sorted(links.broken): print(f'warning: broken link in {page_out}: {href}')
    print(f'{len(pages)} pages written to {out}; open {out/"index.html"}')
    d = out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out
    print(f'search needs the site served over http: python -m http.server -b 127.0.0.1 -d {d}, then open http://127.0.0.1:8000/')
    return out

@call_parse
def main(out:str=None): # Output folder (default: `_docs/`)
    "Build the docs site from the notebooks with nbdev and nbconvert, without Quarto"
    if out: out = Path(out).absolute()
    os.chdir(Path(__file__).resolve().parent.parent)  # nbdev finds its config from the working directory
    build(out)
