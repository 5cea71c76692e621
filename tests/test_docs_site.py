"The docs site: built by `tools/docs.py` without Quarto, served on loopback, read by a real headless Chromium"
import functools, http.server, importlib, json, re, subprocess, sys, threading, urllib.request
from pathlib import Path
from urllib.parse import urldefrag

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
def site(tmp_path_factory):
    "Build the site with `tools/docs.py` and serve it on a loopback port; yields its base URL"
    out = tmp_path_factory.mktemp('docs')/'_docs'
    res = subprocess.run([sys.executable, 'tools/docs.py', '--out', str(out)], cwd=root, capture_output=True, text=True, timeout=300)
    if res.returncode:  # nbdev's own message names the notebook, the cell and the error; the traceback above it is noise
        err = res.stderr[res.stderr.rfind('Exception: Error in notebook'):] if 'Exception: Error in notebook' in res.stderr else res.stderr
        pytest.fail(f'tools/docs.py failed:\n{err[-3000:]}', pytrace=False)
    assert 'broken link' not in res.stdout, res.stdout
    srv = QuietServer(('127.0.0.1', free_port()), functools.partial(Quiet, directory=str(out)))
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
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
  links: [...document.querySelectorAll('a[href]')].map(a => ({raw: a.getAttribute('href'), url: a.href})),
  nav: [...document.querySelectorAll('nav.site-sidebar a')].map(a => a.href),
  imgs: [...document.querySelectorAll('main img')].map(i => ({src: i.src.slice(0, 30), ok: i.complete && i.naturalWidth > 0})),
  highlighted: document.querySelectorAll('.highlight pre span').length,
})"""

@pytest.fixture(scope='module')
def visited(site):
    "Each expected page, opened in headless Chromium and screenshotted: url path -> what the page shows"
    shots.mkdir(parents=True, exist_ok=True)
    res = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path='/usr/bin/chromium', args=chromium_args)
        try:
            page = browser.new_page(viewport=dict(width=1280, height=900))
            for path in expected_pages():
                resp = page.goto(site + path, wait_until='load')
                res[path] = dict(status=resp.status, **page.evaluate(_page_info))
                page.screenshot(path=shots/(path.replace('/', '_').replace('.html', '.png')), full_page=True)
        finally: browser.close()
    return res

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

def exported_names() -> set:
    return {s.lower() for nb in notebooks('api') for s in importlib.import_module(f'fasthtml_oauth.{default_exp(nb)}').__all__}

def test_internal_links_resolve(site, visited):
    "Every link within the site opens a page that exists; a doc link to an exported name lands on its heading"
    targets = {}
    for path, v in visited.items():
        for l in v['links']:
            if re.match(r'(https?:|mailto:|#)', l['raw']): continue
            targets.setdefault(l['url'], set()).add(path)
    assert len(targets) > 20
    statuses, names = {}, exported_names()
    for url, frm in sorted(targets.items()):
        page, frag = urldefrag(url)
        if page not in statuses:
            try: statuses[page] = urllib.request.urlopen(page, timeout=10).status
            except Exception as e: statuses[page] = repr(e)
        assert statuses[page] == 200, f'{url} (linked from {sorted(frm)}): {statuses[page]}'
        if frag in names and page.removeprefix(site) in visited:
            assert frag in visited[page.removeprefix(site)]['ids'], f'{url} (linked from {sorted(frm)}): no #{frag} there'

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
