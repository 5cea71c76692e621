"""What an attack review of the flows, drivers and login routes found, each now a test: hostile providers, odd id_token
headers, tampered logins in progress, and hook answers in FastHTML's own shapes"""
import base64, json, time, httpx, itsdangerous, pytest
from starlette.testclient import TestClient
from fasthtml.common import FastHTML
from fasthtml.common import Redirect
from fasthtml_oauth import AppClient, OIDCAppClient, IdTokenError, TokenError, InvalidResponse
from fasthtml_oauth.devprovider import DevProvider
from inproc import make, browser, start, session, query, failed

def b64(d): return base64.urlsafe_b64encode((d if isinstance(d, str) else json.dumps(d)).encode()).rstrip(b'=').decode()
NESTED = '[' * 5000 + ']' * 5000  # JSON that Python's parser cannot read without running out of stack

@pytest.fixture
def oidc():
    dp = DevProvider()
    dp.register('app', 'app-secret', ['http://localhost/redirect'])
    cli = OIDCAppClient('app', 'app-secret', issuer=dp.issuer, transport=dp.transport)
    cli.metadata()
    return dp, cli

HEADERS = {'kid is a list': b64(dict(alg='RS256', kid=['a'])), 'kid is an object': b64(dict(alg='RS256', kid={'a': 1})),
           'header is a list': b64(['RS256']), 'deeply nested header': b64('{"alg": "RS256", "x": ' + NESTED + '}'),
           'not base64url': 'eyJh bGciOiJSUzI1NiJ9', 'empty': ''}

@pytest.mark.parametrize('name', HEADERS)
def test_odd_id_token_headers_are_refused_as_id_token_errors(oidc, name):
    dp, cli = oidc
    with pytest.raises(IdTokenError): cli.verify_id_token(f"{HEADERS[name]}.{b64(dict(sub='x'))}.c2ln")

@pytest.mark.parametrize('token', [{'alg': 'RS256'}, 5, b'a.b.c', 'a.b', 'a.b.c.d'])
def test_id_tokens_that_are_not_three_part_strings_are_refused(oidc, token):
    with pytest.raises(IdTokenError, match='not a well-formed JWT'): oidc[1].verify_id_token(token)

def provider(handler, **kw):
    return AppClient('id', 'secret', token_url='https://p.example/token', info_url='https://p.example/me',
                     transport=httpx.MockTransport(handler), **kw)

@pytest.mark.parametrize('status', [301, 302, 303, 307])
def test_a_redirect_from_the_token_endpoint_is_not_a_token(status):
    cli = provider(lambda req: httpx.Response(status, json=dict(access_token='at', token_type='Bearer'), headers={'location': '/x'}))
    with pytest.raises(TokenError, match=f'HTTP {status}'): cli.parse_response('code', 'http://localhost/redirect')

@pytest.mark.parametrize('body', ['{"access_token": ' + NESTED + '}', '{"access_token": "at", "token_type": "Bearer"'])
def test_deeply_nested_or_cut_json_is_an_invalid_response(body):
    cli = provider(lambda req: httpx.Response(200, text=body, headers={'content-type': 'application/json'}))
    with pytest.raises(InvalidResponse): cli.parse_response('code', 'http://localhost/redirect')

@pytest.mark.parametrize('length', ['abc', '-1', '1e9'])
def test_a_malformed_content_length_is_an_invalid_response(length):
    cli = provider(lambda req: httpx.Response(200, json=dict(access_token='at'), headers={'content-length': length}))
    with pytest.raises(InvalidResponse, match='Content-Length'): cli.parse_response('code', 'http://localhost/redirect')

@pytest.mark.parametrize('tok', ['abc\r\nX-Evil: 1', 'café', 'a\x00b'])
def test_an_access_token_that_could_not_be_a_header_is_refused(tok):
    seen = []
    cli = provider(lambda req: seen.append(req) or httpx.Response(200, json=dict(sub='1')))
    with pytest.raises(TokenError, match='malformed'): cli.get_info(tok)
    assert seen == []

def test_a_set_of_scopes_is_sent_as_scopes():
    cli = AppClient('id', 'secret', base_url='https://p.example/authorize')
    assert query(cli.login_link('https://app.example/redirect', scope={'openid'}))['scope'] == 'openid'

def signed_session(d, secret='test-secret') -> str:
    "A session cookie as Starlette's SessionMiddleware writes it, signed with the app's secret"
    return itsdangerous.TimestampSigner(secret).sign(base64.b64encode(json.dumps(d).encode())).decode()

@pytest.mark.parametrize('pending', [[], 'abc', {'s': []}, {'s': dict(state='s', code_verifier='v', redirect_uri='r', created=None)}])
def test_malformed_logins_in_progress_are_ignored(pending):
    "Even in a session signed with the app's own key, odd stored logins neither break a new login nor finish one"
    dp, cli, app, oauth = make()
    b = browser(app)
    b.cookies.set('session_', signed_session({'oauth_pending': pending}), domain='localhost.local')
    assert failed(app, b, b.get('/redirect?state=s&code=x')).startswith('This login was not started')
    assert b.get(dp.approve(start(b, oauth), 'ada@example.com')).headers['location'] == '/'

@pytest.mark.parametrize('change', [dict(created=float('inf')), dict(created=True), dict(nonce=5), dict(via=['/redirect'])])
def test_stored_logins_with_wrong_types_are_refused(change):
    dp, cli, app, oauth = make()
    b = browser(app)
    link = start(b, oauth)
    pending = session(app, b)['oauth_pending']
    pending[query(link)['state']].update(change)
    b.cookies.set('session_', signed_session({'oauth_pending': pending}), domain='localhost.local')
    assert failed(app, b, b.get(dp.approve(link, 'ada@example.com'))).startswith('This login was not started')

def test_hooks_may_answer_with_fasthtmls_redirect():
    "A `redir_login` that returns FastHTML's `Redirect` sends the browser on, from the callback and from the gate, htmx too"
    dp, cli, app, oauth = make()
    oauth.redir_login = lambda session: Redirect('/login')
    oauth.get_auth = lambda *a, **kw: None  # refuses every login
    b = browser(app)
    res = b.get(dp.approve(start(b, oauth), 'ada@example.com'))
    assert (res.status_code, res.headers['location']) == (303, '/login')
    assert (b.get('/account').status_code, b.get('/account').headers['location']) == (303, '/login')
    assert b.get('/account', headers={'hx-request': 'true'}).headers['hx-redirect'] == '/login'

def test_oauth_settings_stay_readable_and_settable():
    dp, cli, app, oauth = make(max_pending=2, login_ttl=30)
    assert (oauth.max_pending, oauth.login_ttl) == (2, 30)
    oauth.login_ttl = 0
    b = browser(app)
    assert failed(app, b, b.get(dp.approve(start(b, oauth), 'ada@example.com'))) == 'This login took too long; please start again'

# ---- Issue: hostile visitors, providers and proxies ----------------------------------------------------------------
import socket
from pathlib import Path
from fasthtml.common import fast_app, P as Para
from fasthtml_oauth import OAuth
from conftest import free_port

def raw_get(port:int, target:str) -> bytes:
    "One GET of `target` exactly as written (no client normalises it), over a new connection: the answer's head"
    with socket.create_connection(('127.0.0.1', port), timeout=5) as s:
        s.sendall(f'GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'.encode())
        data = b''
        while chunk := s.recv(65536): data += chunk
    return data

def test_static_route_cannot_reach_files_outside_the_static_folder(serve, tmp_path):
    "FastHTML's static route joins `..` into file names; behind the gate, only files inside `static_path` are public"
    static, secret = tmp_path / 'public', tmp_path / 'secret.txt'
    static.mkdir(); (static / 'style.css').write_text('body{}'); secret.write_text('the secret')
    dp = DevProvider()
    app, rt = fast_app(secret_key='s', static_path=str(static))
    OAuth(app, OIDCAppClient('a', 's', issuer=dp.issuer, transport=dp.transport), static_path=str(static))
    srv = serve(app)
    assert raw_get(srv.port, '/style.css').startswith(b'HTTP/1.1 200')
    for target in ('/..%2Fsecret.txt', '/%2E%2E%2Fsecret.txt', '/%2e%2e/secret.txt', '/public/..%2F..%2Fsecret.txt'):
        res = raw_get(srv.port, target)
        assert b'the secret' not in res and res.startswith(b'HTTP/1.1 303'), (target, res[:200])

def test_a_second_provider_needs_a_namespace():
    dp = DevProvider()
    cli = OIDCAppClient('a', 's', issuer=dp.issuer, transport=dp.transport)
    app = FastHTML(secret_key='s')
    OAuth(app, cli)
    with pytest.raises(ValueError, match='ns'): OAuth(app, cli, redir_path='/b/redirect', ns='b')

def test_the_redirect_uri_never_comes_from_a_host_the_app_does_not_own():
    dp, cli, app, oauth = make(hosts=['localhost'])
    evil = TestClient(app, base_url='http://evil.example', follow_redirects=False)
    res = evil.get(oauth.login_link(None))
    assert res.headers['location'] == '/error' and 'not served at' in session(app, evil)['oauth_error']
    res = browser(app).get(oauth.login_link(None), headers={'x-forwarded-host': 'evil.example'})
    assert query(res.headers['location'])['redirect_uri'] == 'http://localhost/redirect'

def test_a_provider_complaining_about_the_redirect_uri_is_told_which_was_sent():
    dp, cli, app, oauth = make()
    async def token_endpoint_refusing_the_uri(req):
        if req.url.host == 'p.example': return httpx.Response(400, json=dict(error='redirect_uri_mismatch'))
        return await dp.transport.handle_async_request(req)
    b = browser(app)
    cb = dp.approve(start(b, oauth), 'ada@example.com')
    cli.token_url, cli.transport = 'https://p.example/token', httpx.MockTransport(token_endpoint_refusing_the_uri)
    msg = failed(app, b, b.get(cb))
    assert 'redirect_uri_mismatch' in msg and 'http://localhost/redirect' in msg

def test_a_long_return_to_page_cannot_push_the_cookie_past_4kb():
    dp, cli, app, oauth = make()
    b = browser(app)
    nxt = '/account?x=' + 'é' * 470
    b.get(nxt)
    res = b.get(dp.approve(start(b, oauth, next=nxt), 'ada@example.com'))
    assert res.headers['location'] == '/' and len(b.cookies['session_']) < 4000

def test_a_login_link_works_only_in_the_browser_that_was_shown_it():
    dp, cli, app, oauth = make()
    app.routes[:] = [r for r in app.routes if getattr(r, 'path', '') != '/ping']  # /ping (open to all) shows a link instead
    app.get('/ping')(lambda req: oauth.login_link(req, state='link account 42'))
    alice, mallory = browser(app), browser(app)
    link = alice.get('/ping').text
    mallory.get(dp.approve(mallory.get(link).headers['location'], 'mallory@example.com'))
    alice.get(dp.approve(alice.get(link).headers['location'], 'alice@example.com'))
    assert [(l['email'], l['state']) for l in oauth.logins] == [('mallory@example.com', None), ('alice@example.com', 'link account 42')]

def test_a_subject_that_is_not_a_string_is_no_identity():
    dp, cli, app, oauth = make()
    dp.claims['ada@example.com'] = dict(sub=['victim'])
    b = browser(app)
    assert 'no subject' in failed(app, b, b.get(dp.approve(start(b, oauth), 'ada@example.com')))

def test_token_endpoint_authentication_follows_discovery_and_user_info_fills_address_and_phone():
    dp, cli, app, oauth = make()
    seen = []
    async def spy(req):
        seen.append((req.url.path, req.headers.get('authorization', '')[:6], b'client_secret' in req.content))
        return await dp.transport.handle_async_request(req)
    cli.transport = httpx.MockTransport(spy)
    dp.claims['ada@example.com'] = dict(address=dict(locality='London'), phone_number='+44 20 0000 0000')
    dp.id_token_claims = ('sub', 'email', 'email_verified', 'name')
    b = browser(app)
    assert b.get(dp.approve(start(b, oauth, scope='openid email profile address phone'), 'ada@example.com')).headers['location'] == '/'
    assert ('/token', 'Basic ', False) in seen and any(p == '/userinfo' for p, *_ in seen)
    assert oauth.logins[-1]['email'] == 'ada@example.com'

def test_every_instance_check_invalid_applies():
    dp, cli, app, oauth = make(ns='a')
    dp2 = DevProvider(issuer='http://127.0.0.1:8799')
    dp2.register('b', 'b-secret', ['http://localhost/b/redirect'])
    other = OAuth(app, OIDCAppClient('b', 'b-secret', issuer=dp2.issuer, transport=dp2.transport), redir_path='/b/redirect', ns='b')
    other.get_auth = lambda *a: True
    other.check_invalid = lambda req, session, auth: auth.endswith(dp.user_claims('eve@example.com')['sub']) and Para('banned')
    b = browser(app)
    b.get(dp.approve(start(b, oauth), 'eve@example.com'))  # logged in through the first instance, banned by the second
    assert b.get('/account').text.count('banned') == 1

@pytest.mark.parametrize('endpoint', ['token', 'discovery', 'jwks', 'userinfo'])
def test_a_provider_redirecting_elsewhere_is_never_followed(endpoint):
    "Token, discovery, JWKS and user info answers that redirect to another host: an error, and nothing sent there"
    hosts = []
    dp = DevProvider()
    dp.register('app', 'app-secret', ['http://localhost/redirect'])
    async def handler(req):
        hosts.append(req.url.host)
        if endpoint in req.url.path or (endpoint == 'discovery' and 'well-known' in req.url.path):
            return httpx.Response(302, headers={'location': 'https://evil.example/steal'})
        return await dp.transport.handle_async_request(req)
    dp.id_token_claims = ('sub',) if endpoint == 'userinfo' else None
    dp2, cli, app, oauth = make(dp=dp)
    cli.transport = httpx.MockTransport(handler)
    b = browser(app)
    res = b.get(oauth.login_link(None))
    if endpoint == 'discovery': assert res.headers['location'] == '/error'
    else: failed(app, b, b.get(dp.approve(res.headers['location'], 'ada@example.com')))
    assert 'evil.example' not in hosts

# ---- found by a second attack review ---------------------------------------------------------------------------------
def test_routes_shaped_like_static_ones_stay_gated(tmp_path):
    "Only FastHTML's `static_route_exts` route is exempt: `static_route` folders and the app's own `{fname:path}.ext` routes are not"
    public, members = tmp_path / 'public', tmp_path / 'members'
    public.mkdir(); members.mkdir()
    for d in (public, members): (d / 'notes.md').write_text(f'{d.name} notes')
    (public / 'manifest.json').write_text('{}'); (public / 'site.css').write_text('body{}')
    dp, cli, app, oauth = make(static_path=str(public))
    app.static_route('.md', prefix='/members/', static_path=str(members))
    def export(fname:str): return 'PRIVATE EXPORT'
    app.get('/export/{fname:path}.json')(export)
    app.static_route_exts(static_path=str(public))
    b = browser(app)
    assert [b.get(p).status_code for p in ('/members/notes.md', '/export/manifest.json', '/site.css')] == [303, 303, 200]

def test_namespaces_cannot_nest():
    dp = DevProvider()
    cli = OIDCAppClient('a', 's', issuer=dp.issuer, transport=dp.transport)
    app = FastHTML(secret_key='s')
    OAuth(app, cli, ns='corp')
    with pytest.raises(ValueError, match="without ':'"): OAuth(app, cli, redir_path='/b/redirect', ns='corp:eu')

def test_a_malformed_host_is_a_clear_error_not_a_traceback(caplog):
    dp, cli, app, oauth = make()
    res = TestClient(app, base_url='http://localhost', follow_redirects=False).get(oauth.login_link(None), headers={'host': 'localhost;1'})
    assert res.headers['location'] == '/error'
    assert not [r for r in caplog.records if 'unexpectedly' in r.getMessage()]

def test_hosts_include_the_port_and_forwarded_headers_take_the_nearest_proxys_entry():
    dp, cli, app, oauth = make(hosts=['localhost', 'app.example'], proxies=['testclient'])
    assert browser(app).get(oauth.login_link(None), headers={'host': 'localhost:6666'}).headers['location'] == '/error'
    res = browser(app).get(oauth.login_link(None), headers={'x-forwarded-host': 'evil.example, app.example',
                                                           'x-forwarded-proto': 'http, https'})
    assert query(res.headers['location'])['redirect_uri'] == 'https://app.example/redirect'
    with pytest.raises(TypeError, match='lists'): make(proxies='testclient')

def test_a_provider_cannot_push_the_cookie_past_4kb():
    dp, cli, app, oauth = make()
    b = browser(app)
    assert '😀' in failed(app, b, b.get(dp.approve(start(b, oauth), 'ada@example.com', deny=True).replace(
        'The+user+denied+the+request', '😀' * 250)))
    assert len(b.cookies['session_']) < 4000
    dp.claims['long@example.com'] = dict(sub='x' * 3000)
    b = browser(app)
    assert 'identifier' in failed(app, b, b.get(dp.approve(start(b, oauth), 'long@example.com')))
