"""A real OpenID provider for the end-to-end tests: npm `oidc-provider` (`tests/oidc_provider/server.js`) on a loopback port,
a scripted "user" who signs in and consents on its devInteractions pages over plain HTTP, and the FastHTML app under test"""
import hashlib, re, signal, subprocess, time
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import urljoin, urlsplit
import httpx, pytest

here = Path(__file__).parent
op_dir = here/'oidc_provider'
artifacts = here/'artifacts'
# Special characters in the secret check that both client authentication methods encode it (RFC 6749 §2.3.1)
CLIENT_ID, CLIENT_SECRET = 'fasthtml-test', 'test secret:+/&=%~'  # printable ASCII only (RFC 6749 VSCHAR)

def free_port() -> int:
    from conftest import free_port  # late: conftest imports this module
    return free_port()

def expected_sub(login:str) -> str:
    "The `sub` that server.js gives a login name"
    return 'user-' + hashlib.sha256(login.encode()).hexdigest()[:16]

@dataclass
class OP:
    "A running provider: its issuer, the static clients' credentials, and the one app port whose callback is registered"
    issuer: str
    client_id: str
    client_secret: str
    app_port: int
    proc: subprocess.Popen
    log: Path
    @property
    def app_url(self) -> str: return f'http://127.0.0.1:{self.app_port}'
    @property
    def redirect_uri(self) -> str: return self.app_url + '/redirect'
    @property
    def basic_client_id(self) -> str: return self.client_id + '-basic'  # the client that authenticates with client_secret_basic
    def log_text(self) -> str: return self.log.read_text(errors='replace') if self.log.exists() else ''

def stop_provider(proc:subprocess.Popen):
    "End the provider we started, by its pid only"
    if proc.poll() is not None: return
    proc.send_signal(signal.SIGTERM)
    try: proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)

def start_provider(redirect_uris:list, port:int|None=None, app_port:int=0, name:str='oidc-provider', logout_uris:list=(),
                   backchannel_uri:str|None=None, host:str='localhost', access_token_ttl:int|None=None,
                   device_flow:bool=False, device_interval:int|None=None, device_code_ttl:int|None=None,
                   native_client_id:str|None=None) -> OP:
    """Start server.js on a free loopback port and wait until its discovery document answers; it logs to
    `artifacts/{name}.log`. `host`: `localhost` (127.0.0.1, and ::1 where there is one) or `127.0.0.1` (that alone);
    `access_token_ttl`: seconds its access tokens live (default: an hour); `device_flow`: offer the device flow
    (RFC 8628), its answers naming `device_interval` seconds between polls (default: none, so 5) and its codes living
    `device_code_ttl` seconds (default: ten minutes); `native_client_id`: also register a public native client whose
    redirect URIs are `http://127.0.0.1/callback` and `http://[::1]/callback` on any port (RFC 8252)"""
    if not (op_dir/'node_modules'/'oidc-provider').is_dir():
        pytest.fail(f"{op_dir}/node_modules is missing: run `bash tests/setup.sh` (it runs `npm ci --prefix tests/oidc_provider`)", pytrace=False)
    port = port or free_port()
    issuer = f'http://{host}:{port}'  # localhost: the apps run on 127.0.0.1, another site, as a real provider would be
    artifacts.mkdir(exist_ok=True)
    log = artifacts/f'{name}.log'
    args = ['node', str(op_dir/'server.js'), '--port', str(port), '--host', host, '--watch-stdin',
            '--client-id', CLIENT_ID, '--client-secret', CLIENT_SECRET] + [a for u in redirect_uris for a in ('--redirect-uri', u)]
    args += [a for u in logout_uris for a in ('--post-logout-redirect-uri', u)] + (['--backchannel-logout-uri', backchannel_uri] if backchannel_uri else [])
    if access_token_ttl: args += ['--access-token-ttl', str(access_token_ttl)]
    if device_flow: args += ['--device-flow']
    if device_interval: args += ['--device-interval', str(device_interval)]
    if device_code_ttl: args += ['--device-code-ttl', str(device_code_ttl)]
    if native_client_id: args += ['--native-client-id', native_client_id]
    with open(log, 'wb') as err:
        # stdin is a pipe only we hold: if this process dies however it dies, the provider sees it close and exits
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, cwd=op_dir)
    op = OP(issuer, CLIENT_ID, CLIENT_SECRET, app_port, proc, log)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None: pytest.fail(f"oidc-provider exited with code {proc.returncode}:\n{op.log_text()}", pytrace=False)
        try:
            if httpx.get(f'http://127.0.0.1:{port}/.well-known/openid-configuration', timeout=1).status_code == 200: return op
        except httpx.HTTPError: pass
        if time.monotonic() > deadline:
            stop_provider(proc)
            pytest.fail(f"oidc-provider did not answer on port {port} within 20 s:\n{op.log_text()}", pytrace=False)
        time.sleep(0.05)

@pytest.fixture(scope='session')
def oidc_provider():
    "A real `oidc-provider` for the whole session; the apps under test must be served on `op.app_port` (callback `/redirect`)"
    app_port = free_port()
    app = f'http://127.0.0.1:{app_port}'
    op = start_provider([app + '/redirect'], app_port=app_port, logout_uris=[app + '/logout/done'], backchannel_uri=app + '/redirect/backchannel-logout')
    try: yield op
    finally:
        stop_provider(op.proc)
        if op.proc.stdin: op.proc.stdin.close()

# A scripted user on the provider's pages

def _form(html:str, prompt:str) -> tuple[str, dict]|None:
    "The action and hidden fields of the devInteractions form for `prompt` in `html`, if the page has one"
    for m in re.finditer(r'<form\b([^>]*)>(.*?)</form>', html, re.S):
        fields = {unescape(n): unescape(v) for n, v in re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)"', m[2])}
        if fields.get('prompt') == prompt: return unescape(re.search(r'action="([^"]*)"', m[1])[1]), fields
    return None

def provider_login(b:httpx.Client, url:str, issuer:str, login:str='ada@example.com', cancel:bool=False, max_steps:int=12) -> httpx.Response:
    """Follow `url` through the provider as a user would: sign in as `login` (or press Cancel), consent, and return the
    first answer that leaves the provider (a redirect to the app's callback, or a form_post page) or is an error page"""
    origin = '{0.scheme}://{0.netloc}'.format(urlsplit(issuer))
    res = b.get(url)
    for _ in range(max_steps):
        if res.is_redirect:
            nxt = urljoin(str(res.url), res.headers['location'])
            if not nxt.startswith(origin + '/'): return res
            res = b.get(nxt)
            continue
        if res.status_code != 200: return res
        if cancel and (m := re.search(r'<a href="([^"]*/abort)"', res.text)):
            res = b.get(urljoin(str(res.url), unescape(m[1])))
        elif f := _form(res.text, 'login'):
            res = b.post(urljoin(str(res.url), f[0]), data=dict(f[1], login=login, password='any password'))
        elif f := _form(res.text, 'consent'):
            res = b.post(urljoin(str(res.url), f[0]), data=f[1])
        else: return res  # a page we do not drive: form_post's auto-submitting form, or an error page
    raise AssertionError(f"the provider did not let go of the browser after {max_steps} steps; last page: {res.url}")

def provider_logout(b:httpx.Client, url:str, issuer:str) -> httpx.Response:
    "Follow the provider's logout link `url` as a user would: confirm on its logout page; the answer that sends the browser on"
    res = b.get(url)
    m = re.search(r'<form\b[^>]*action="([^"]*)"[^>]*>(.*?)</form>', res.text, re.S)
    assert res.status_code == 200 and m, (res.status_code, res.text[:500])
    fields = {unescape(n): unescape(v) for n, v in re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)"', m[2])}
    res = b.post(urljoin(str(res.url), unescape(m[1])), data=dict(fields, logout='yes'))
    while res.is_redirect and (nxt := urljoin(str(res.url), res.headers['location'])).startswith(issuer.rstrip('/') + '/'):
        res = b.get(nxt)
    return res

# The app under test

SCOPE = 'openid email profile offline_access'  # offline_access (with prompt=consent) gets a refresh token

def make_app(cli, redir_path:str='/redirect', redir_method:str='get', oauth_kw:dict|None=None, **login_kw):
    """A FastHTML app gated by `OAuth` through `cli` that loads nothing from other sites (no CDN htmx). Its login link asks
    for `SCOPE` with `prompt=consent` and any other `login_kw` (`prompt=None` sends no prompt).
    `app.tokens` holds each login's `Token` by identity, as `get_auth` received it"""
    from fasthtml.common import FastHTML, Title, Main, H1, P, A, Form, Button
    from fasthtml_oauth import OAuth
    kw = {k: v for k, v in (dict(prompt='consent') | login_kw).items() if v is not None}
    tokens = {}
    class Auth(OAuth):
        def get_auth(self, info, ident, session, state, token):
            tokens[ident] = token
            session.update(email=info.email, name=info.name, verified=info.email_verified)
            return True

    app = FastHTML(secret_key='e2e-test-secret-key', default_hdrs=False)  # 16+ characters: keep_tokens derives a key
    oauth = Auth(app, cli, redir_path=redir_path, redir_method=redir_method, **(oauth_kw or {}))

    @app.get('/')
    def home(auth, session):
        return Title('Home'), Main(H1('Signed in'), P(session.get('email'), id='email'), P(auth, id='sub'), P(session.get('name'), id='name'),
                                   Form(Button('Log out', id='logout'), method='post', action='/logout'))

    @app.get('/page')
    def page(x:str=''): return Title('Page'), Main(P(f'page {x}', id='page'))

    @app.get('/login')
    def login(req):
        return Title('Log in'), Main(P('Not logged in'), A('Log in', href=oauth.login_link(req, scope=SCOPE, **kw), id='login'))

    @app.get('/error')
    def error(session):
        return Title('Login failed'), Main(H1('Login failed'), P(session.get('oauth_error', ''), id='error'), A('Try again', href='/login'))

    app.tokens, app.oauth = tokens, oauth
    return app
