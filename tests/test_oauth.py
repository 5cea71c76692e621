"""The "Using the OAuth class" example of FastHTML's OAuth page, import changed, served by uvicorn and logged into over real HTTP against the DevProvider"""
import re, httpx, pytest
from fasthtml.common import FastHTML, RedirectResponse, P, A, Div
from fasthtml_oauth import OAuth, OIDCAppClient
from fasthtml_oauth.devprovider import DevProvider
from conftest import free_port

def page_app(client):
    # The code of FastHTML's OAuth page, as published but for the import line (and the P, A, Div imports it forgot)
    class Auth(OAuth):
        def get_auth(self, info, ident, session, state):
            email = info.email or ''
            if info.email_verified and email.split('@')[-1]=='answer.ai':
                return RedirectResponse('/', status_code=303)

    app = FastHTML(secret_key='test-secret')
    oauth = Auth(app, client)

    @app.get('/')
    def home(auth): return P('Logged in!'), A('Log out', href='/logout')

    @app.get('/login')
    def login(req): return Div(P("Not logged in"), A('Log in', href=oauth.login_link(req)))

    @app.get('/error')
    def error(session): return P(session.get('oauth_error', ''))
    return app

@pytest.fixture
def servers(serve):
    pport, aport = free_port(), free_port()
    dp = DevProvider(issuer=f'http://127.0.0.1:{pport}')
    dp.register('page-app', 'page-secret', [f'http://127.0.0.1:{aport}/redirect'])
    serve(dp, port=pport)
    app = serve(page_app(OIDCAppClient('page-app', 'page-secret', issuer=dp.issuer, timeout=3)), port=aport)
    return dp, app

def browse_login(app, email):
    "A browser (cookie jar, manual redirects) logging in through the app of FastHTML's OAuth page and the provider's sign-in form"
    b = httpx.Client(base_url=app.url, follow_redirects=False)
    assert b.get('/').headers['location'] == '/login'
    link = re.search(r'href="(/redirect/start[^"]+)"', b.get('/login').text)[1]
    to_provider = b.get(link)
    assert to_provider.status_code == 303
    page = b.get(to_provider.headers['location'])
    assert 'Development provider' in page.text
    form = page.text[page.text.index('<form'):page.text.index('</form>')]
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))
    back = b.post(re.search(r'action="([^"]+)"', form)[1], data=dict(fields, email=email, name='Test User'))
    assert back.status_code == 303
    return b, b.get(back.headers['location'])

def test_page_example_logs_in_over_real_http(servers):
    dp, app = servers
    b, res = browse_login(app, 'ada@answer.ai')
    assert (res.status_code, res.headers['location']) == (303, '/')
    assert 'Logged in!' in b.get('/').text
    assert b.post('/logout').headers['location'] == '/login'
    assert b.get('/').headers['location'] == '/login'

def test_page_example_refuses_other_domains(servers):
    dp, app = servers
    b, res = browse_login(app, 'eve@example.com')
    assert res.headers['location'] == '/login'
    assert b.get('/').headers['location'] == '/login'

def test_provider_failure_reaches_error_page(servers):
    dp, app = servers
    dp.faults['token'] = 'http_500'
    b, res = browse_login(app, 'ada@answer.ai')
    assert res.headers['location'] == '/error'
    assert 'HTTP 500' in b.get('/error').text
