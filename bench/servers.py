"""The benchmark's servers, each run as its own process by `run.py`:

    python bench/servers.py provider --port P --redirects URL,URL --latency 0.02 [--api]
    python bench/servers.py app --lib ours|paced|theirs|authlib --kind oidc|oauth2 --port P --provider URL [--slow 0.2]

`paced` is ours with `OAuth(..., pace=True)`, the turn-taking of login steps.

Every app is the same small FastHTML app: `/login` answers with the login link as text (what a login page's button
would point at), `/redirect` is the callback, `/` is a gated page and `/open` the same page left ungated, `/health` says ok.
Its `get_auth` hook is synchronous (like most apps' database writes): it sleeps `--slow` seconds, then accepts the login."""
import argparse, os, sys, time

CLIENT_ID, CLIENT_SECRET, SECRET_KEY = 'bench-app', 'bench-secret-0123456789', 'bench-session-key-0123456789abcdef'
USER = 'user@example.com'
SCOPES = dict(oidc='openid email profile', oauth2='email profile')  # No `openid` for OAuth2: no id_token, so token + user info

def make_provider(issuer:str, redirects:list[str], latency:float):
    "The DevProvider at `issuer`, answering every request after `latency` seconds and approving every login at once"
    from fasthtml_oauth.devprovider import DevProvider
    dp = DevProvider(issuer=issuer, code_ttl=3600, auto_approve=USER)
    dp.latency, dp.require_pkce = latency, False  # fasthtml.oauth sends no PKCE
    dp.register(CLIENT_ID, CLIENT_SECRET, redirects)
    return dp

def counted(dp):
    """`dp` with refresh tokens used once (a reused one is refused), and `GET /bench/refreshes`: the refresh requests
    it received (`refresh`: answered with a token, `refused`) and its API hits since the last such GET"""
    from collections import Counter
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route, Mount
    dp.rotate_refresh, n, token = True, Counter(), dp._token
    async def counted_token(req):
        res = await token(req)
        if (await req.form()).get('grant_type') == 'refresh_token':
            n['refresh' if res.status_code == 200 else 'refused'] += 1
        return res
    async def refreshes(req):
        res = JSONResponse(dict(refresh=n['refresh'], refused=n['refused'], api=dp.hits['api']))
        n.clear(); dp.hits.clear()
        return res
    dp._token = counted_token  # its endpoints look their handler up on every request
    return Starlette(routes=[Route('/bench/refreshes', refreshes), Mount('', dp)])

def provider_main(port:int, redirects:list[str], latency:float, api:bool=False):
    "The DevProvider on loopback; with `api`, refresh tokens are used once and refresh requests are counted (`counted`)"
    import uvicorn
    dp = make_provider(f'http://127.0.0.1:{port}', redirects, latency)
    uvicorn.run(counted(dp) if api else dp, host='127.0.0.1', port=port, log_level='warning', access_log=False,
                timeout_keep_alive=60)

def _page(title, auth):
    from fasthtml.common import Title, Main, H1, P, Ul, Li
    return Title(title), Main(H1(title), P(f'Logged in as {auth}'), Ul(*[Li(f'Item {i}') for i in range(10)]))

def _fresh_logins():
    "Login sessions in a new SQLite file (the default store), removed when the process ends"
    import atexit, shutil, tempfile
    from fasthtml_oauth.sessions import LoginSessions, SQLiteStore
    d = tempfile.mkdtemp(prefix='bench-logins-')
    atexit.register(shutil.rmtree, d, True)
    return LoginSessions(SQLiteStore(os.path.join(d, 'logins.db')))

def make_app(lib:str, kind:str, provider:str, slow:float=0.):
    "The benchmark app for library `lib` against the provider at `provider` as an OpenID (`oidc`) or plain OAuth2 (`oauth2`) provider"
    from fasthtml.common import FastHTML, RedirectResponse
    from starlette.responses import PlainTextResponse
    app = FastHTML(secret_key=SECRET_KEY)
    ep = dict(base_url=provider + '/authorize', token_url=provider + '/token', info_url=provider + '/userinfo')
    def accept(session):
        if slow: time.sleep(slow)
        return RedirectResponse('/', status_code=303)

    if lib in ('ours', 'paced'):
        from fasthtml_oauth import OAuth, OIDCAppClient, AppClient
        cli = OIDCAppClient(CLIENT_ID, CLIENT_SECRET, issuer=provider) if kind == 'oidc' else AppClient(CLIENT_ID, CLIENT_SECRET, scope=SCOPES[kind], **ep)
        class BenchAuth(OAuth):
            def get_auth(self, info, ident, session, state): return accept(session)
        oauth = BenchAuth(app, cli, skip=['/open', '/health'], pace=lib == 'paced', login_sessions=_fresh_logins())
        link = oauth.login_link
    elif lib == 'theirs':
        from fasthtml.oauth import OAuth, _AppClient
        class DevAppClient(_AppClient):
            "fasthtml.oauth's client pointed at the DevProvider through its endpoint attributes (it has no id_token path: token + user info)"
            base_url, token_url, info_url = ep['base_url'], ep['token_url'], ep['info_url']
        cli = DevAppClient(CLIENT_ID, CLIENT_SECRET, scope=SCOPES[kind])
        class BenchAuth(OAuth):
            def get_auth(self, info, ident, session, state): return accept(session)
        oauth = BenchAuth(app, cli, skip=['/redirect', '/error', '/login', '/open', '/health'])  # its skip replaces the defaults
        link = oauth.login_link
    elif lib == 'authlib':
        from authlib.integrations.starlette_client import OAuth, OAuthError
        from fasthtml.common import Beforeware
        oa = OAuth()
        kw = dict(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, client_kwargs=dict(scope=SCOPES[kind], code_challenge_method='S256'))
        if kind == 'oidc': oa.register('dev', server_metadata_url=provider + '/.well-known/openid-configuration', **kw)
        else: oa.register('dev', authorize_url=ep['base_url'], access_token_url=ep['token_url'], userinfo_endpoint=ep['info_url'], **kw)
        def before(req, session):
            req.scope['auth'] = session.get('auth')
            if not req.scope['auth']: return RedirectResponse('/login', status_code=303)
        app.before.append(Beforeware(before, skip=['/redirect', '/start', '/error', '/login', '/open', '/health']))
        link = lambda req: '/start'
        @app.get('/start')
        async def start(req): return await oa.dev.authorize_redirect(req, f"http://{req.headers['host']}/redirect")
        @app.get('/redirect')
        async def callback(req, session):
            try:
                token = await oa.dev.authorize_access_token(req)
                info = token.get('userinfo') or await oa.dev.userinfo(token=token)  # OpenID: the verified id_token's claims
            except OAuthError as e:
                session['oauth_error'] = str(e)
                return RedirectResponse('/error', status_code=303)
            res = accept(session)
            session['auth'] = info['sub']
            return res
    else: raise SystemExit(f'unknown library {lib!r}')

    @app.get('/login')
    def login(req): return PlainTextResponse(link(req))
    @app.get('/error')
    def error(session): return PlainTextResponse(f"login failed: {session.pop('oauth_error', None)}", status_code=500)
    @app.get('/health')
    def health(): return PlainTextResponse('ok')
    @app.get('/')
    def home(auth): return _page('Home', auth)
    @app.get('/open')
    def open_page(auth): return _page('Home', auth)
    return app

def app_main(lib, kind, port, provider, slow, profile=None, gc_freeze=False):
    import uvicorn
    app = make_app(lib, kind, provider, slow)
    if gc_freeze:
        import gc
        gc.collect()
        gc.freeze()  # what's loaded so far stays out of every later collection
    prof = None
    if profile:
        from pyinstrument import Profiler
        import signal
        def stop(sig, frame): raise SystemExit(0)
        signal.signal(signal.SIGTERM, stop)  # uvicorn re-raises the SIGTERM it caught once it has shut down: end through `finally`
        prof = Profiler(interval=0.0005, async_mode='disabled')
        prof.start()
    try: uvicorn.run(app, host='127.0.0.1', port=port, log_level='warning', access_log=False, timeout_keep_alive=60)
    finally:
        if prof:
            prof.stop()
            with open(profile, 'w') as f: f.write(prof.output_text(unicode=True, color=False, show_all=False))
            with open(profile + '.html', 'w') as f: f.write(prof.output_html())

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('role', choices=['provider', 'app'])
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--redirects', default='')
    p.add_argument('--latency', type=float, default=0.02)
    p.add_argument('--api', action='store_true', help='provider: refresh tokens used once, refresh requests counted')
    p.add_argument('--lib'); p.add_argument('--kind', default='oidc'); p.add_argument('--provider')
    p.add_argument('--slow', type=float, default=0.)
    p.add_argument('--profile', default=None, help='write a pyinstrument profile of the whole process to this file at exit')
    p.add_argument('--gc-freeze', action='store_true', help='call gc.freeze() once the app is built, as a latency-minded deployment might')
    a = p.parse_args()
    os.environ.setdefault('OAUTHLIB_INSECURE_TRANSPORT', '1')  # fasthtml.oauth's oauthlib refuses http links otherwise (loopback only here)
    os.environ.setdefault('AUTHLIB_INSECURE_TRANSPORT', '1')
    if a.role == 'provider': provider_main(a.port, [u for u in a.redirects.split(',') if u], a.latency, a.api)
    else: app_main(a.lib, a.kind, a.port, a.provider, a.slow, a.profile, gc_freeze=a.gc_freeze)
