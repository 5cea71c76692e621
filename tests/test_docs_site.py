"The docs site: built by `tools/docs.py` without Quarto, served on loopback, read by a real headless Chromium"
import functools, http.server, importlib, inspect, json, re, subprocess, sys, threading, urllib.request
from pathlib import Path
from urllib.parse import unquote, urldefrag

import pytest, yaml
from nbdev.config import nbpath2html
from playwright.sync_api import sync_playwright
from conftest import free_port

root = Path(__file__).resolve().parent.parent
nbs = root/'nbs'
shots = root/'tests/artifacts/docs'
chromium_args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']

## What the site must contain, read from the sources (not from the builder)

def nb_cells(path): return json.loads(Path(path).read_text())['cells']

def nb_title(path) -> str:
    "The `# Title` that starts a notebook's first markdown cell"
    md = next(''.join(c['source']) for c in nb_cells(path) if c['cell_type'] == 'markdown')
    return re.match(r'#\s+(.+)', md.strip())[1].strip()

def qmd_title(path) -> str: return yaml.safe_load(Path(path).read_text().split('---')[1])['title']

def default_exp(path) -> str:
    "The module a notebook exports to (`#| default_exp name`)"
    src = '\n'.join(''.join(c['source']) for c in nb_cells(path) if c['cell_type'] == 'code')
    return re.search(r'^#\|\s*default_exp\s+(\S+)', src, re.M)[1]

def has_png(path) -> bool:
    return any('image/png' in o.get('data', {}) for c in nb_cells(path) for o in c.get('outputs', []))

def mermaid_blocks(path) -> int:
    "How many Mermaid diagrams a page's source has (```mermaid blocks in its markdown)"
    if path.suffix != '.ipynb': return path.read_text().count('```mermaid')
    return sum(''.join(c['source']).count('```mermaid') for c in nb_cells(path) if c['cell_type'] == 'markdown')

def defined_in(attr, mod) -> bool:
    "Whether a class attribute is a method or property written in module `mod` (also where `@patch` added it)"
    f = attr.fget if isinstance(attr, property) else getattr(attr, '__func__', attr)
    return callable(f) and getattr(f, '__module__', None) == mod.__name__

def foreign_override(cls, name) -> bool:
    "Whether `cls.name` implements a method of a base class from another library (httpx's `handle_request`, ...)"
    return any(name in vars(b) and not b.__module__.startswith('fasthtml_oauth') for b in cls.__mro__[1:-1])

def public_names(mod) -> list[str]:
    "Every name a reader may use from `mod`: its `__all__`, and the public methods and properties its exported classes get in it"
    # A constant (a set of hosts, a logger, a dict) gets no heading of its own: `test_api_pages_document_every_export` checks it is named
    res = [n for n in mod.__all__ if inspect.isclass(o := getattr(mod, n)) or inspect.isroutine(o)]
    for n in mod.__all__:
        o = getattr(mod, n)
        if inspect.isclass(o) and o.__module__ == mod.__name__:
            res += [f'{n}.{a}' for a, v in vars(o).items() if not a.startswith('_') and defined_in(v, mod) and not foreign_override(o, a)]
    return res

def notebooks(folder): return sorted(p for p in (nbs/folder).glob('*.ipynb') if not p.name.startswith(('_', '.')))

def expected_pages() -> dict:
    "Every page the sidebar must show: url path -> (title, source)"
    res = {'index.html': (nb_title(nbs/'index.ipynb'), nbs/'index.ipynb')}
    for folder in ('api', 'explains'):
        res[f'{folder}/index.html'] = (qmd_title(nbs/folder/'index.qmd'), nbs/folder/'index.qmd')
        for p in notebooks(folder): res[f'{folder}/{nbpath2html(p).name}'] = (nb_title(p), p)
    return res

## Build, serve, visit each page once

class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass

class QuietServer(http.server.ThreadingHTTPServer):
    "The browser sometimes drops a connection it no longer needs (a broken pipe): not worth a traceback in the test output"
    def handle_error(self, request, client_address): pass

@pytest.fixture(scope='module')
def built(tmp_path_factory) -> Path:
    "The site, built with `tools/docs.py` into a temporary folder"
    out = tmp_path_factory.mktemp('docs')/'_docs'
    res = subprocess.run([sys.executable, 'tools/docs.py', '--out', str(out)], cwd=root, capture_output=True, text=True, timeout=300)
    if res.returncode:  # nbdev's own message names the notebook, the cell and the error; the traceback above it is noise
        err = res.stderr[res.stderr.rfind('Exception: Error in notebook'):] if 'Exception: Error in notebook' in res.stderr else res.stderr
        pytest.fail(f'tools/docs.py failed:\n{err[-3000:]}\n{res.stdout[-2000:]}', pytrace=False)
    assert 'broken link' not in res.stdout, res.stdout
    return out

@pytest.fixture(scope='module')
def site(built):
    "The built site served on a loopback port; yields its base URL"
    srv = QuietServer(('127.0.0.1', free_port()), functools.partial(Quiet, directory=str(built)))
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f'http://127.0.0.1:{srv.server_port}/'
    srv.shutdown()
    srv.server_close()
    th.join(10)

_page_info = """() => ({
  title: document.title,
  h1: document.querySelector('h1.page-title')?.innerText,
  text: document.querySelector('main').innerText,
  headings: [...document.querySelectorAll('main h2, main h3, main h4')].map(h => h.innerText.replace(/¶$/, '').trim()),
  heading_ids: [...document.querySelectorAll('main :is(h2, h3, h4, h5, h6)[id]')].map(h => ({id: h.id, level: h.tagName})),
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
  links: [...document.querySelectorAll('a[href]')].map(a => ({raw: a.getAttribute('href'), url: a.href})),
  nav: [...document.querySelectorAll('nav.site-sidebar a')].map(a => a.href),
  menu: [...document.querySelectorAll('nav.site-sidebar .site-menu a')].map(a => a.href),
  toc: [...document.querySelectorAll('nav.page-toc a')].map(a => a.href),
  prev: document.querySelector('nav.page-nav a[rel=prev]')?.href ?? null,
  next: document.querySelector('nav.page-nav a[rel=next]')?.href ?? null,
  imgs: [...document.querySelectorAll('main img')].map(i => ({src: i.src.slice(0, 30), ok: i.complete && i.naturalWidth > 0})),
  highlighted: document.querySelectorAll('.highlight pre span').length,
  outputs: [...document.querySelectorAll('main .jp-OutputArea-output')].map(o => o.innerText),
  diagrams: document.querySelectorAll('main pre.mermaid').length,
  diagram_svgs: document.querySelectorAll('main pre.mermaid svg').length,
  resources: [...document.querySelectorAll('script[src], link[rel=stylesheet][href], img[src], iframe[src]')]
    .map(e => e.src || e.href).filter(u => !u.startsWith('data:')),
})"""

# Whatever in `main` has content wider than its box must scroll: `overflow-x: hidden` (or `clip`) cuts lines off,
# `visible` spills them over the page's edge. SVG internals and inline elements (no box of their own) are skipped.
_clipped = """() => {
  const main = document.querySelector('main'), res = [], seen = [];
  const longest = t => (t || '').split('\\n').reduce((a, b) => b.length > a.length ? b : a, '').trim().slice(0, 70);
  for (const el of [main, ...main.querySelectorAll('*')]) {
    if (el.closest('svg') || el.clientWidth === 0 || el.scrollWidth <= el.clientWidth + 1) continue;
    const ox = getComputedStyle(el).overflowX;
    if (ox === 'auto' || ox === 'scroll' || seen.some(s => s.contains(el))) continue;  // one report per cut-off box
    seen.push(el);
    const cell = el.closest('.jp-Cell')?.id || '';
    res.push(`<${el.tagName.toLowerCase()} class="${el.className}"> in ${cell || 'main'}: ${el.scrollWidth}px wide in ${el.clientWidth}px, overflow-x ${ox}: ${longest(el.innerText)}`);
  }
  if (document.documentElement.scrollWidth > innerWidth) res.push(`the page itself is ${document.documentElement.scrollWidth}px wide in a ${innerWidth}px window`);
  return res;
}"""

_diagrams_done = "[...document.querySelectorAll('main pre.mermaid')].every(p => p.querySelector('svg'))"

viewports = dict(desktop=dict(width=1280, height=900), phone=dict(width=390, height=844))

def shot_name(path, vp): return path.replace('/', '_').replace('.html', f'{"" if vp == "desktop" else "_" + vp}.png')

@pytest.fixture(scope='module')
def visited(site):
    "Each expected page, opened in headless Chromium at desktop and phone widths and screenshotted: url path -> what it shows"
    shots.mkdir(parents=True, exist_ok=True)
    res = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path='/usr/bin/chromium', args=chromium_args)
        try:
            tabs = {vp: browser.new_page(viewport=size) for vp, size in viewports.items()}
            for path in expected_pages():
                for vp, page in tabs.items():
                    resp = page.goto(site + path, wait_until='load')
                    try: page.wait_for_function(_diagrams_done, timeout=15_000)
                    except Exception: pass  # test_diagrams_are_drawn says which page
                    if vp == 'desktop': res[path] = dict(status=resp.status, **page.evaluate(_page_info))
                    res[path][f'clipped_{vp}'] = page.evaluate(_clipped)
                    page.screenshot(path=shots/shot_name(path, vp), full_page=True)
        finally: browser.close()
    return res

def site_path(url, site) -> str|None:
    "The expected page's path that `url` (without fragment) opens, or None when it is outside the site"
    if not url.startswith(site): return None
    p = unquote(url.removeprefix(site))
    return p + 'index.html' if p == '' or p.endswith('/') else p

## The checks

def test_every_page_is_there_with_its_title(site, visited):
    pages = expected_pages()
    assert {'index.html', 'api/index.html', 'explains/index.html'} < set(pages) and len(notebooks('api')) >= 5
    for path, (title, src) in pages.items():
        v = visited[path]
        assert v['status'] == 200, path
        assert v['h1'] == title, (path, v['h1'], title)
        assert v['title'].startswith(title), (path, v['title'])
        assert {site + p for p in pages} <= set(v['nav']), f'{path}: sidebar misses {set(site + p for p in pages) - set(v["nav"])}'

def test_api_pages_document_every_export(visited):
    missing = {}
    for nb in notebooks('api'):
        mod = importlib.import_module(f'fasthtml_oauth.{default_exp(nb)}')
        v = visited[f'api/{nbpath2html(nb).name}']
        assert mod.__all__, mod.__name__
        if m := [s for s in mod.__all__ if s not in v['text']]: missing[nb.name] = m
        # show_doc output: a heading per documented name, with its signature as highlighted code
        assert set(mod.__all__) & set(v['headings']), f'{nb.name}: no show_doc heading'
        assert v['highlighted'] > 0, f'{nb.name}: no highlighted code'
    assert not missing, f'exported but not on their API page: {missing}'

def test_index_pages_list_their_folder(site, visited):
    for folder in ('api', 'explains'):
        hrefs = {l['url'] for l in visited[f'{folder}/index.html']['links'] if l['raw'] and not l['raw'].startswith('#')}
        for p in notebooks(folder): assert f'{site}{folder}/{nbpath2html(p).name}' in hrefs, (folder, p.name)

def test_internal_links_resolve(site, visited):
    "Every link within the site opens a page that exists"
    targets = {}
    for path, v in visited.items():
        for l in v['links']:
            if re.match(r'(https?:|mailto:|#)', l['raw']): continue
            targets.setdefault(urldefrag(l['url'])[0], set()).add(path)
    assert len(targets) > 10
    statuses = {}
    for page, frm in sorted(targets.items()):
        try: statuses[page] = urllib.request.urlopen(page, timeout=10).status
        except Exception as e: statuses[page] = repr(e)
    bad = {page: (statuses[page], sorted(frm)) for page, frm in targets.items() if statuses[page] != 200}
    assert not bad, f'links to pages that do not open (page: status, linked from): {bad}'

def test_every_anchor_lands(site, visited):
    "Every link with a #fragment within the site lands on an element with that id on its page"
    broken = []
    for path, v in visited.items():
        for l in v['links']:
            page, frag = urldefrag(l['url'])
            if not frag or (target := site_path(page, site)) not in visited: continue
            if unquote(frag) not in visited[target]['ids']: broken.append(f'{path}: {l["raw"]} (no id "{unquote(frag)}" on {target})')
    assert not broken, f'{len(broken)} links lead to an anchor that is not there:\n' + '\n'.join(sorted(set(broken)))

def test_images_show(visited):
    pages = expected_pages()
    for path, v in visited.items():
        assert all(i['ok'] for i in v['imgs']), (path, [i for i in v['imgs'] if not i['ok']])
        src = pages[path][1]
        if src.suffix == '.ipynb' and has_png(src): assert any(i['src'].startswith('data:image/png') for i in v['imgs']), path

def test_performance_page_shows_the_published_run():
    "The site shows the performance page's saved outputs, so they must come from the published results, not an older run"
    import sys
    sys.path.insert(0, str(root/'bench'))
    from run import table
    r = json.loads((nbs/'explains/bench_results.json').read_text())
    shown = ''.join(''.join(o.get('text', '')) for c in nb_cells(nbs/'explains/performance.ipynb') if c['cell_type'] == 'code' for o in c.get('outputs', []))
    assert table(r) in shown, 'performance.ipynb outputs are stale: run nbdev-test --save on it after publishing a benchmark run'

def test_every_public_name_has_an_entry(visited):
    "Each API page has a show_doc entry (a heading with the name's id) for each name in `__all__` and each public method"
    missing = {}
    for nb in notebooks('api'):
        path = f'api/{nbpath2html(nb).name}'
        ids = {h['id'] for h in visited[path]['heading_ids']}
        mod = importlib.import_module(f'fasthtml_oauth.{default_exp(nb)}')
        if m := [n for n in public_names(mod) if n.lower() not in ids]: missing[f'{path} ({nb.name})'] = m
    assert not missing, 'public names without a show_doc entry:\n' + '\n'.join(f'{p}: {", ".join(m)}' for p, m in missing.items())

def test_code_lines_are_not_cut_off(visited):
    "Code, outputs and everything else in a page scroll sideways where they are wider than the page, at desktop and phone widths"
    clipped = [f'{path} at {vp} width: {c}' for path, v in visited.items() for vp in viewports for c in v[f'clipped_{vp}']]
    assert not clipped, f'{len(clipped)} boxes cut their content off:\n' + '\n'.join(clipped)

_re_mermaid_src = re.compile(r'^\s*(sequenceDiagram|flowchart\s|graph\s+(TD|TB|BT|LR|RL)|classDiagram|stateDiagram|erDiagram|gantt|journey|pie\b)', re.M)

def test_diagrams_are_drawn(site, visited):
    "Every ```mermaid block of a page's source is an SVG on it; no page shows diagram source; Mermaid loads only where needed"
    pages, bad = expected_pages(), []
    for path, v in visited.items():
        want = mermaid_blocks(pages[path][1])
        if m := _re_mermaid_src.search(v['text']): bad.append(f'{path}: shows diagram source {m[0].strip()!r}')
        if v['diagram_svgs'] != want: bad.append(f'{path}: {want} diagrams in its source, {v["diagram_svgs"]} drawn ({v["diagrams"]} blocks)')
        loads = any(u.endswith('/mermaid.min.js') for u in v['resources'])
        if loads != bool(want): bad.append(f'{path}: {"loads" if loads else "does not load"} mermaid.min.js')
    assert sum(mermaid_blocks(p) for _, p in pages.values()) > 0, 'no diagram in the sources: nothing checked'
    assert not bad, '\n'.join(bad)

def test_no_outside_resources(site, visited):
    "Scripts, stylesheets and images all come from the site itself (no CDN), so it works offline"
    outside = {path: u for path, v in visited.items() for u in v['resources'] if not u.startswith(site)}
    assert not outside, outside

_re_repr = re.compile(r'<[^<>\n]*(?: object at 0x[0-9a-fA-F]+|<locals>)[^\n]*?>+|<(?:function|bound method|built-in function|built-in method|class|module|coroutine object|generator object) [^<>\n]*>')

def test_no_stray_outputs(visited):
    "No output shows a bare Python repr (`<... object at 0x...>`, `<function ...>`, `<...<locals>...>`): readers learn nothing from them"
    stray = [f'{path}: {m[0]}' for path, v in visited.items() for o in v['outputs'] for m in _re_repr.finditer(o)]
    assert not stray, f'{len(stray)} outputs show a bare Python repr:\n' + '\n'.join(stray)

def test_table_of_contents(site, visited):
    "Each page with h2/h3 headings has a table of contents listing them in order, each link landing on its heading"
    bad = []
    for path, v in visited.items():
        heads = [h['id'] for h in v['heading_ids'] if h['level'] in ('H2', 'H3')]
        toc = [urldefrag(u) for u in v['toc']]
        if [f for _, f in toc] != heads: bad.append(f'{path}: table of contents {[f for _, f in toc]} but headings {heads}')
        if any(site_path(p, site) != path for p, _ in toc): bad.append(f'{path}: table of contents links to another page')
        if dups := sorted({i for i in heads if heads.count(i) > 1}): bad.append(f'{path}: headings share ids {dups}')
    assert any(v['toc'] for v in visited.values())
    assert not bad, '\n'.join(bad)

def test_previous_next_follow_the_sidebar(site, visited):
    "Previous/next links at the bottom of each page follow the sidebar's order, from the first page to the last"
    order = list(dict.fromkeys(visited['index.html']['menu']))
    assert {site + p for p in expected_pages()} <= set(order)
    bad = []
    for path, v in visited.items():
        i = order.index(site + path)
        want = (order[i-1] if i else None, order[i+1] if i+1 < len(order) else None)
        if (v['prev'], v['next']) != want: bad.append(f'{path}: previous/next {(v["prev"], v["next"])}, sidebar order says {want}')
    assert not bad, '\n'.join(bad)

def test_search(built, site):
    "Pagefind's search box finds a name and a word of the prose offline, linking to the pages they are on; opened as a file, it says how to serve the site"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path='/usr/bin/chromium', args=chromium_args)
        try:
            page = browser.new_page(viewport=viewports['desktop'])
            page.goto(site + 'explains/oauth.html', wait_until='load')
            found = {}
            for word in ('DevTransport', 'nonce', 'redir_url'):
                page.fill('.pagefind-ui__search-input', word)
                # "N results for <word>" once the search is done; the results' links fill in after it
                page.wait_for_function('''w => /^\\d+ results? for/.test(document.querySelector('.pagefind-ui__message')?.innerText)
                    && document.querySelector('.pagefind-ui__message').innerText.includes(w)
                    && document.querySelector('.pagefind-ui__result-link')''', arg=word, timeout=15_000)
                found[word] = page.eval_on_selector_all('.pagefind-ui__result-link', 'els => els.map(a => a.href)')
                if word == 'DevTransport': page.screenshot(path=shots/'search.png')
            pages = {site + p for p in expected_pages()}
            on = lambda word, path: any(urldefrag(u)[0] == site + path for u in found[word])
            assert all(found.values()), f'no results for {[w for w, us in found.items() if not us]}'
            assert not (outside := [u for us in found.values() for u in us if urldefrag(u)[0] not in pages]), f'results outside the site: {outside}'
            assert on('DevTransport', 'api/devprovider.html'), found
            assert on('redir_url', 'api/core.html') or on('redir_url', 'api/oauth.html'), found
            page.click('.pagefind-ui__result-link')
            page.wait_for_load_state('load')
            assert urldefrag(page.url)[0] in pages, page.url
            # Browsers do not let a page opened as a file fetch the index: there the box says how to serve the site
            page.goto((built/'index.html').as_uri(), wait_until='load')
            assert 'python -m http.server' in page.inner_text('#site-search')
        finally: browser.close()
