"Every snippet of the README runs as written: each Python block as a file of its own, the install command on a checkout"
import os, re, signal, subprocess, sys, time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx, pytest
from conftest import free_port

root = Path(__file__).resolve().parent.parent
readme = (root/'README.md').read_text()

def blocks() -> list[tuple[str, str, str|None]]:
    "Each fenced block of the README: its language, its code, and the plain block right after it (its output), if any"
    found = list(re.finditer(r'^```(\w*)\n(.*?)^```\n', readme, re.S | re.M))
    res = []
    for i, m in enumerate(found):
        nxt = found[i+1] if i + 1 < len(found) else None
        out = nxt[2] if nxt and nxt[1] == '' and readme[m.end():nxt.start()].strip() == '' else None
        res.append((m[1], m[2], out))
    return res

python_blocks = [(code, out) for lang, code, out in blocks() if lang == 'python']
servers = [code for code, _ in python_blocks if re.search(r'^serve\(', code, re.M)]
scripts = [(code, out) for code, out in python_blocks if not re.search(r'^serve\(', code, re.M)]

def test_the_readme_has_its_snippets():
    "Each kind of snippet below is found, so a README reorganised past these tests' notice fails here"
    assert len(servers) >= 1 and len(scripts) >= 1, [c[:60] for c, _ in python_blocks]
    assert len(servers) + len(scripts) == len(python_blocks)

@pytest.mark.parametrize('i', range(len(scripts)))
def test_script_snippet_prints_what_the_readme_shows(tmp_path, i):
    code, out = scripts[i]
    (tmp_path/'snippet.py').write_text(code)
    res = subprocess.run([sys.executable, 'snippet.py'], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    if out is not None: assert res.stdout.strip() == out.strip(), (res.stdout, out)

class Running:
    "A snippet started as `python main.py`, in a process group of its own (uvicorn's reloader starts a child)"
    def __init__(self, folder:Path, env:dict):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, 'main.py'], cwd=folder, env=os.environ | env | dict(PORT=str(self.port)),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.base = f'http://localhost:{self.port}'
    def wait_up(self, seconds=30):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.proc.poll() is not None: pytest.fail(f'main.py exited ({self.proc.returncode}):\n{self.proc.stdout.read()[-3000:]}')
            try: return httpx.get(self.base + '/login', timeout=2)
            except httpx.TransportError: time.sleep(0.2)
        pytest.fail('main.py did not answer within 30 s')
    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try: self.proc.wait(15)
            except subprocess.TimeoutExpired: os.killpg(self.proc.pid, signal.SIGKILL); self.proc.wait(5)

def credentials(code:str) -> dict:
    "Made-up values for every environment variable a snippet reads"
    return {k: f'readme-{k.lower()}' for k in re.findall(r'os\.getenv\(["\'](\w+)["\']', code)}

@pytest.mark.parametrize('i', range(len(servers)))
def test_served_snippet_runs_as_a_file(tmp_path, i):
    "`python main.py` serves on localhost; each login link reaches its provider with state and PKCE; a forged callback ends on /error, saying why"
    (tmp_path/'main.py').write_text(servers[i])
    env = credentials(servers[i])
    assert env, 'a served snippet reads its credentials from the environment'
    app = Running(tmp_path, env)
    try:
        assert app.wait_up().status_code == 200
        with httpx.Client(base_url=app.base, follow_redirects=False, timeout=10) as browser:
            assert browser.get('/').headers['location'] == '/login'
            links = [h.replace('&amp;', '&') for h in re.findall(r'<a href="(/[^"]+/start\?[^"]+)"', browser.get('/login').text)]
            assert links, browser.get('/login').text
            for link in links:
                to_provider = browser.get(link)
                assert to_provider.status_code in (302, 303), to_provider.text[:500]
                url = urlsplit(to_provider.headers['location'])
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                assert url.scheme == 'https' and q['client_id'] in env.values(), url
                assert q['redirect_uri'].startswith(app.base + '/') and q['state'] and q['code_challenge_method'] == 'S256', q
                # A callback this browser did not start: the error page, with the reason, never a 500
                back = browser.get(urlsplit(q['redirect_uri']).path, params=dict(code='forged', state='forged'))
                assert back.headers['location'] == '/error', (back.status_code, back.text[:300])
                page = browser.get('/error')
                assert page.status_code == 200 and 'The login failed' not in page.text and 'login' in page.text.lower(), page.text[-500:]
            if 'GoogleAppClient' in servers[i]: assert any('accounts.google.com' in browser.get(l).headers['location'] for l in links)
    finally: app.stop()

def test_served_snippet_without_credentials_names_the_variables(tmp_path):
    (tmp_path/'main.py').write_text(servers[0])
    env = {k: v for k, v in os.environ.items() if k not in ('AUTH_CLIENT_ID', 'AUTH_CLIENT_SECRET')}
    res = subprocess.run([sys.executable, 'main.py'], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert 'the environment variables AUTH_CLIENT_ID and AUTH_CLIENT_SECRET are not set' in res.stderr, res.stderr[-2000:]

def test_install_from_a_checkout(tmp_path):
    "What the README's `pip install ./fasthtml_oauth` installs: the package with its static files (htmx, the demo's assets, icons)"
    cmd = next(l for lang, code, _ in blocks() if lang == 'sh' for l in code.splitlines() if l.startswith('pip install ./'))
    assert cmd.split()[:3] == ['pip', 'install', './fasthtml_oauth'], cmd
    res = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(tmp_path/'site'), str(root)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    pkg = tmp_path/'site'/'fasthtml_oauth'
    for f in ('static/htmx.min.js', 'static/demo.css', 'static/favicon.ico', 'devprovider.py', 'demo.py'): assert (pkg/f).is_file(), f
    assert list((pkg/'static'/'icons').glob('*.svg')), 'no provider icons installed'
    res = subprocess.run([sys.executable, '-c', 'import fasthtml_oauth, fasthtml_oauth.demo; print(fasthtml_oauth.__file__)'],
                         cwd=tmp_path, env=os.environ | dict(PYTHONPATH=str(tmp_path/'site')), capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == str(pkg/'__init__.py'), res.stderr[-2000:]
