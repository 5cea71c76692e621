"""What an attack review of the flows, drivers and login routes found, each now a test: hostile providers, odd id_token
headers, tampered logins in progress, and hook answers in FastHTML's own shapes"""
import base64, json, time, httpx, itsdangerous, pytest
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
