"An app using `OAuth` against an in-process DevProvider, and a scripted browser for it (no network)"
import re, threading
from urllib.parse import urlsplit, parse_qs
from starlette.testclient import TestClient
from fasthtml.common import FastHTML, P
from fasthtml_oauth import OAuth, OIDCAppClient
from fasthtml_oauth.devprovider import DevProvider

class Recorder(OAuth):
    "Admit everyone; record each login's info and token, keyed by the user's email"
    def get_auth(self, info, ident, session, state, token):
        with self.lock: self.logins.append(dict(email=info.email, ident=ident, token=token, state=state))
        return True

def make(dp=None, secret='test-secret', client_kw=None, **oauth_kw):
    "A provider (new unless given), a client for it, and an app with gated `/account`, open `/ping`, and `/error`"
    dp = dp or DevProvider()
    dp.register('app', 'app-secret', ['http://localhost/redirect'])
    cli = OIDCAppClient('app', 'app-secret', issuer=dp.issuer, transport=dp.transport, **(client_kw or {}))
    app = FastHTML(secret_key=secret)
    oauth = Recorder(app, cli, skip=['/ping'], **oauth_kw)
    oauth.logins, oauth.lock = [], threading.Lock()
    app.get('/error')(lambda session: P(session.get('oauth_error'), id='error'))
    app.get('/account')(lambda auth: P(str(auth), id='auth'))
    app.get('/ping')(lambda: 'pong')
    return dp, cli, app, oauth

def browser(app): return TestClient(app, base_url='http://localhost', follow_redirects=False, raise_server_exceptions=False)
def session(app, b): return app.decode_session(b.cookies.get('session_'))
def query(url): return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}

def start(b, oauth, **kw):
    "Click the login link: the provider URL the app redirects to"
    res = b.get(oauth.login_link(None, **kw))
    assert res.status_code == 303, res.status_code
    return res.headers['location']

def login(b, dp, oauth, email='ada@example.com', **kw):
    "A whole login: the app's answer to the callback"
    return b.get(dp.approve(start(b, oauth, **kw), email))

def failed(app, b, res) -> str:
    "Assert `res` went to the error page with nobody logged in; the message"
    assert (res.status_code, res.headers.get('location')) == (303, '/error'), (res.status_code, res.text[:300])
    s = session(app, b)
    assert 'auth' not in s, s
    assert s['oauth_error'], s
    return s['oauth_error']
