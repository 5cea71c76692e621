"""A conformance provider: the DevProvider, misbehaving as each RP test of the OpenID Foundation's conformance suite asks,
and a relying party (a FastHTML app using `OAuth`) whose every HTTP exchange is recorded for the test's log"""
import base64, json, re, secrets
import httpx
from joserfc import jwt
from joserfc.jwk import KeySet
from starlette.testclient import TestClient
from fasthtml.common import FastHTML, P
from fasthtml_oauth import OAuth, OIDCAppClient
from fasthtml_oauth.devprovider import DevProvider, _new_key
from fasthtml_oauth.sessions import LoginSessions, SQLiteStore

APP, CLIENT_ID, CLIENT_SECRET = 'http://localhost', 'conformance-rp', 'conformance-rp-secret'

def _b64(d:dict) -> str: return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b'=').decode()

class ConformanceOP(DevProvider):
    """The DevProvider plus the conformance suite's misbehaviours, chosen in `faults`:
    `id_token`: `sig_none`, `kid_absent`, `no_iat`, `no_sub`, `no_aud`, `rotate_before_signing` (and the DevProvider's own);
    `userinfo`: `bad_sub`; `discovery`: `issuer_mismatch`, `random_jwks_uri`; `jwks`: `extra_key` (two keys published)"""
    def __init__(self, **kw):
        super().__init__(**kw)
        self.extra, self.userinfo_auth = [], []

    @property
    def jwks(self) -> dict: return KeySet([self.key] + self.extra).as_dict(private=False)

    def id_token(self, client_id, user, nonce=None, sid=None):
        f = self.faults.get('id_token')
        if f == 'rotate_before_signing': self.rotate_keys()
        tok = super().id_token(client_id, user, nonce, sid)
        if f not in ('sig_none', 'kid_absent', 'no_iat', 'no_sub', 'no_aud'): return tok
        c = jwt.decode(tok, self.key).claims
        for k in dict(no_iat='iat', no_sub='sub', no_aud='aud').get(f, '').split(): c.pop(k, None)
        if f == 'sig_none': return f"{_b64(dict(alg='none', typ='JWT'))}.{_b64(c)}."
        return jwt.encode(dict(alg=self.alg, typ='JWT') | ({} if f == 'kid_absent' else dict(kid=self.key.kid)), c, self.key)

    async def _userinfo(self, req):
        self.userinfo_auth.append(req.headers.get('authorization', '').split(' ')[0])
        res = await super()._userinfo(req)
        if self.faults.get('userinfo') == 'bad_sub' and res.status_code == 200:
            d = json.loads(res.body) | dict(sub='someone-else')
            return httpx_json(d)
        return res

    async def _discovery(self, req):
        res = await super()._discovery(req)
        d, f = json.loads(res.body), self.faults.get('discovery')
        if f == 'issuer_mismatch': d['issuer'] = 'https://another-issuer.example'
        if f == 'random_jwks_uri': d['jwks_uri'] = self.url('jwks') + '?run=' + secrets.token_hex(8)
        return httpx_json(d)

def httpx_json(d:dict):
    from starlette.responses import JSONResponse
    return JSONResponse(d)

# Recording what crosses the wire, without secrets

_secret_fields = {'client_secret', 'code_verifier', 'code', 'access_token', 'refresh_token', 'password'}
_re_jwt = re.compile(r'^[\w-]+\.[\w-]+\.[\w-]*$')

def _show(v):
    "A value for the log: a JWT as its header and claims (never its signature), secrets redacted"
    if isinstance(v, str) and _re_jwt.match(v):
        h, c, _ = v.split('.')
        try: return dict(jwt_header=json.loads(base64.urlsafe_b64decode(h + '==')), jwt_claims=json.loads(base64.urlsafe_b64decode(c + '==')))
        except ValueError: return '<redacted>'
    return v

def _fields(d:dict) -> dict: return {k: '<redacted>' if k in _secret_fields else _show(v) for k, v in d.items()}

def _body(content:bytes, ctype:str):
    if 'json' in ctype:
        try: d = json.loads(content)
        except ValueError: return '<not JSON>'
        return _fields(d) if isinstance(d, dict) else d
    if 'x-www-form-urlencoded' in ctype:
        from urllib.parse import parse_qsl
        return _fields(dict(parse_qsl(content.decode(errors='replace'))))
    if 'html' in ctype: return f'<HTML page, {len(content)} bytes>'
    return content[:200].decode(errors='replace') if content else ''

def _url(u) -> str:
    from urllib.parse import urlsplit, parse_qsl, urlencode
    s = urlsplit(str(u))
    q = {k: (v if not isinstance(x := _fields({k: v})[k], dict) else '<jwt>') for k, v in parse_qsl(s.query)}
    q = {k: '<redacted>' if k in _secret_fields else v for k, v in q.items()}
    return s._replace(query=urlencode(q)).geturl()

def entry(who:str, req:httpx.Request, res:httpx.Response) -> dict:
    "One exchange for the log"
    auth = req.headers.get('authorization', '')
    return dict(who=who, method=req.method, url=_url(req.url), authorization=auth.split(' ')[0] + ' <redacted>' if auth else None,
                request=_body(req.content, req.headers.get('content-type', '')), status=res.status_code,
                location=_url(res.headers['location']) if 'location' in res.headers else None,
                response=_body(res.content, res.headers.get('content-type', '')))

class Recording(httpx.AsyncBaseTransport, httpx.BaseTransport):
    "A transport that records each exchange through `inner` in `log`"
    def __init__(self, inner, log:list, who:str): self.inner, self.log, self.who = inner, log, who
    async def handle_async_request(self, req):
        res = await self.inner.handle_async_request(req)
        await res.aread()
        self.log.append(entry(self.who, req, res))
        return res
    def handle_request(self, req):
        res = self.inner.handle_request(req)
        res.read()
        self.log.append(entry(self.who, req, res))
        return res

class RP:
    "The relying party under test: a FastHTML app logging in through `OAuth` against a `ConformanceOP`, every exchange recorded"
    def __init__(self, form_post:bool=False, **oauth_kw):
        self.log, self.form_post = [], form_post
        self.op = op = ConformanceOP(issuer='http://127.0.0.1:8765')
        op.register(CLIENT_ID, CLIENT_SECRET, [APP + '/redirect'], [APP + '/logout/done'], APP + '/redirect/backchannel-logout')
        self.cli = OIDCAppClient(CLIENT_ID, CLIENT_SECRET, issuer=op.issuer, transport=Recording(op.transport, self.log, 'rp -> op'))
        self.app = app = FastHTML(secret_key='conformance-rp-secret-key')
        class Auth(OAuth):
            def get_auth(self, info, ident, session, state):
                session['email'] = info.email
                return True
        self.oauth = Auth(app, self.cli, redir_method='post' if form_post else 'get',
                          login_sessions=LoginSessions(SQLiteStore(':memory:')), **oauth_kw)
        app.get('/')(lambda auth, session: P(f"{auth} {session.get('email')}"))
        app.get('/error')(lambda session: P(session.get('oauth_error')))
        op.backchannel_transport = Recording(httpx.ASGITransport(app), self.log, 'op -> rp (back-channel)')
        hooks = dict(response=[lambda res: (res.read(), self.log.append(entry('browser -> rp', res.request, res)))])
        self.browser = TestClient(app, base_url=APP, follow_redirects=False)
        self.browser.event_hooks = hooks

    def sign_in(self, url:str, email:str) -> httpx.Response:
        "The user signs in at the provider's link `url`; the browser then brings the answer to the app (query or form_post)"
        with httpx.Client(transport=Recording(self.op.transport, self.log, 'browser -> op')) as op:
            from urllib.parse import parse_qsl, urlsplit
            res = op.post(self.op.url('authorize'), data=dict(parse_qsl(urlsplit(url).query), email=email, name=''))
        if res.status_code in (302, 303): return self.browser.get(res.headers['location'])
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', res.text))
        action = re.search(r'action="([^"]+)"', res.text)[1]
        return self.browser.post(action, data=fields)

    def login(self, email:str='ada@example.com') -> dict:
        "A whole login as a browser makes it; the app's decision: logged in (and as whom) or refused (and why)"
        kw = dict(response_mode='form_post') if self.form_post else {}
        to_op = self.browser.get(self.oauth.login_link(None, **kw)).headers['location']
        res = self.sign_in(to_op, email) if to_op.startswith(self.op.url('authorize')) else None  # else: refused at the start
        if res is None: return self._refused(303)
        if res.headers.get('location') == '/':
            return dict(decision='logged in', page=self.browser.get('/').text.split('<p>')[-1].split('</p>')[0])
        return self._refused(res.status_code)

    def _refused(self, status:int) -> dict:
        "The app's decision when the login did not end on its home page: what its error page says"
        from html import unescape
        return dict(decision='refused', status=status, error=unescape(self.browser.get('/error').text.split('<p>')[-1].split('</p>')[0]))
