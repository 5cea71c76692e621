"""Kept tokens (`OAuth(..., keep_tokens=True)`, `oauth.api`) against real services: two app processes sharing one user's
expired token in a real redis-server refresh it once at a DevProvider served over HTTP in a process of its own, which
rotates refresh tokens (and without the cross-process lock, both refresh and one is refused); and, at the real
OpenID provider (npm `oidc-provider`) whose access tokens expire in seconds, a call through `oauth.api` refreshes once,
and after the refresh token is revoked the call raises `LoginRequired`, the token is forgotten, and a page making the
call sends the browser to log in again. Two in-process scenes, made deterministic, cover what the refresh lock must
survive: another process's refresh landing between a read and the lock, and a caller cancelled while taking it"""
import asyncio, re, secrets, time
from collections import Counter
from html import unescape
from urllib.parse import parse_qsl, urlsplit
import httpx, pytest, redis, redis.asyncio
from fasthtml.common import P
from fasthtml_oauth import OIDCAppClient, LoginRequired
from conftest import free_port, wait_ready
from oidc_fixture import expected_sub, make_app, provider_login, start_provider, stop_provider
from test_real_provider import login_to_callback
from test_sessions import redis_url  # noqa: F401  (a redis-server of this module's own)

def browser(**kw): return httpx.Client(follow_redirects=False, timeout=10, **kw)

# Two processes, one Redis, one refresh

SECRET = 'token-test-secret'
LATENCY = 0.5  # seconds the provider takes to answer a token request: both processes get to refresh while one is at it

def start_scene(uvicorn_app, redis_url, lock:bool=True):
    "A DevProvider process and two app processes A and B sharing `redis_url` under a prefix of their own, all serving"
    pport, a_port, b_port = free_port(), free_port(), free_port()
    issuer, A, B = (f'http://127.0.0.1:{p}' for p in (pport, a_port, b_port))
    prefix = f'tokens-{secrets.token_hex(4)}:'
    dp = uvicorn_app('dev_provider_app:app', pport, None, ISSUER=issuer, REDIRECT_URIS=f'{A}/redirect',
                     LATENCY=f'{{"token": {LATENCY}}}')
    env = dict(APP_SECRET=SECRET, ISSUER=issuer, BASE_URL=A, REDIS_URL=redis_url, PREFIX=prefix,
               REFRESH_LOCK=str(int(lock)))
    apps = [uvicorn_app('tokens_app:app', port, None, **env) for port in (a_port, b_port)]
    wait_ready(dp, f'{issuer}/.well-known/openid-configuration')
    for p, url in zip(apps, (A, B)): wait_ready(p, f'{url}/login')
    return issuer, A, B, prefix

def dev_login(b:httpx.Client, app_url:str, email:str='ada@example.com'):
    "Log in through the app at `app_url`, signing in on the DevProvider's page over HTTP"
    link = unescape(re.search(r'href="(/redirect/start[^"]+)"', b.get(f'{app_url}/login').text)[1])
    to_op = b.get(app_url + link).headers['location']
    assert b.get(to_op).status_code == 200  # the provider's sign-in page
    res = b.post(to_op.split('?')[0], data=dict(parse_qsl(urlsplit(to_op).query), email=email))
    assert res.status_code == 303, res.text[:300]
    res = b.get(res.headers['location'])
    assert (res.status_code, res.headers['location']) == (303, '/'), res.text[:300]

def hits(issuer) -> dict: return httpx.get(f'{issuer}/test/hits').json()

def warm_up(b:httpx.Client, urls:list, issuer:str, redis_url:str, prefix:str):
    """A first burst with the token as the login left it: every call works, no refresh. It also warms the processes up
    (code paths run once, connections to Redis open), so that in the next burst both are as quick to refresh"""
    before = hits(issuer)
    assert asyncio.run(burst(b.cookies, urls, redis_url, prefix, 50)) == [{'ok': 50}] * len(urls)
    assert hits(issuer).get('token', 0) == before.get('token', 0)

def expire_kept_token(b:httpx.Client, app_url:str) -> dict:
    "Make the user's kept token expired, as every app process sees it: the token (described by digests) before"
    before = b.get(f'{app_url}/test/token').json()
    assert before['rt'] and not before['expired'], before
    assert b.post(f'{app_url}/test/expire').json() == dict(before, expired=True)
    return before

async def burst(cookies, urls:list, redis_url:str, prefix:str, n:int) -> list:
    "POST /burst?n=`n` to each app at once, say go when every one is waiting for it: each app's counts of outcomes"
    r = redis.asyncio.from_url(redis_url)
    try:
        await r.delete(prefix + 'ready')
        async with httpx.AsyncClient(cookies=cookies, timeout=30) as c:
            calls = [asyncio.create_task(c.post(f'{u}/burst', params=dict(n=n))) for u in urls]
            for _ in range(400):
                if int(await r.get(prefix + 'ready') or 0) == len(urls): break
                await asyncio.sleep(0.025)
            else: raise AssertionError(f'the apps did not get ready for the burst: {await asyncio.gather(*calls)}')
            await r.rpush(prefix + 'go', *['go'] * len(urls))
            return [res.json() for res in await asyncio.gather(*calls)]
    finally: await r.aclose()

def test_two_processes_share_one_refresh(uvicorn_app, redis_url):
    """Processes A and B share one user's expired token in Redis; each makes 50 concurrent `oauth.api` calls at the same
    moment. The provider gets exactly one refresh request (a refresh token it rotates: a second would be refused), and
    all 100 calls succeed, each with one API request"""
    issuer, A, B, prefix = start_scene(uvicorn_app, redis_url)
    with browser() as b:
        dev_login(b, A)
        warm_up(b, [A, B], issuer, redis_url, prefix)
        old = expire_kept_token(b, A)
        before = hits(issuer)
        outcomes = asyncio.run(burst(b.cookies, [A, B], redis_url, prefix, 50))
        after = hits(issuer)
        assert outcomes == [{'ok': 50}, {'ok': 50}]
        made = {k: after.get(k, 0) - before.get(k, 0) for k in ('token', 'api', 'userinfo')}
        assert made == dict(token=1, api=100, userinfo=0)
        new = b.get(f'{B}/test/token').json()  # rotated: a new access token and a new refresh token
        assert not new['expired'] and new['at'] != old['at'] and new['rt'] != old['rt']
    with redis.Redis.from_url(redis_url) as r: assert r.keys(f'{prefix}token-refresh:*') == []  # the lock was let go

def test_without_the_cross_process_lock_both_refresh(uvicorn_app, redis_url):
    """The same with apps whose store gives every process the refresh lock: each process refreshes with the same refresh
    token, the provider (which rotates them) refuses the later one, and that process's call ends in `LoginRequired`"""
    issuer, A, B, prefix = start_scene(uvicorn_app, redis_url, lock=False)
    with browser() as b:
        dev_login(b, A)
        warm_up(b, [A, B], issuer, redis_url, prefix)
        expire_kept_token(b, A)
        before = hits(issuer)
        outcomes = asyncio.run(burst(b.cookies, [A, B], redis_url, prefix, 50))
    after = hits(issuer)
    assert after['token'] - before['token'] >= 2
    total = sum(map(Counter, outcomes), Counter())
    assert set(total) <= {'ok', 'LoginRequired'} and total['LoginRequired'] >= 1 and total.total() == 100, outcomes

# In-process scenes: two processes' refreshes, a cancelled one

def in_process_scene(store, apps:int=1, rotate:bool=False):
    """A DevProvider (rotating refresh tokens if `rotate`), `apps` apps keeping tokens in `store` (as that many processes
    sharing it), and Ada logged in on the first: the apps, the token store, the provider's name, Ada's auth, the provider"""
    from fasthtml.common import FastHTML
    from starlette.testclient import TestClient
    from fasthtml_oauth import OAuth
    from fasthtml_oauth.sessions import LoginSessions
    from fasthtml_oauth.devprovider import DevProvider
    dp = DevProvider(token_ttl=3600)
    dp.rotate_refresh = rotate
    dp.register('app', 'app-secret', ['http://localhost/redirect'])
    cli = OIDCAppClient('app', 'app-secret', issuer=dp.issuer, transport=dp.transport)
    class Auth(OAuth):
        def get_auth(self, info, ident, session, state): return True
    oas = [Auth(FastHTML(secret_key=SECRET), cli, keep_tokens=True, login_sessions=LoginSessions(store)) for _ in range(apps)]
    b = TestClient(oas[0].app, base_url='http://localhost', follow_redirects=False)
    assert b.get(dp.approve(b.get(oas[0].login_link(None)).headers['location'], 'ada@example.com')).status_code == 303
    return oas, oas[0]._tokens(), oas[0]._provider(), oas[0].app.decode_session(b.cookies['session_'])['auth'], dp

async def expire(ts, prov, auth):
    "Make the user's kept token expired; the token before"
    old = await ts.load(prov, auth)
    assert await ts.save(prov, auth, dict(old, expires_at=time.time() - 1))
    return old

def test_a_refresh_landing_before_the_lock_is_used_not_repeated():
    """Two app processes (two `OAuth` over one SQLite store) and a provider that rotates refresh tokens. Process B reads
    the user's expired token; process A refreshes it and lets go of the lock; then B takes the lock. B must read the token
    again and send A's new one: refreshing with the refresh token A just used up would be refused, and would send the
    user to log in again. Deterministic: B's taking of the lock waits for A's whole refresh"""
    from fasthtml_oauth.sessions import SQLiteStore
    store = SQLiteStore(':memory:')
    (A, B), ts, prov, auth, dp = in_process_scene(store, apps=2, rotate=True)
    async def scene():
        old = await expire(ts, prov, auth)
        put, order = store.put, []
        async def put_after_a(kind, *args, **kw):  # B's lock waits for A's whole refresh, lock taken and let go
            if kind == 'token-refresh' and not order:
                order.append('B reads, then A refreshes')
                order.append((await A.fresh_token(auth)).access_token)
            return await put(kind, *args, **kw)
        store.put = put_after_a
        dp.hits.clear()
        got = await B.fresh_token(auth)
        return old, got, order
    old, got, order = asyncio.run(scene())
    assert (dp.hits['token'], order[1], got.access_token != old.access_token) == (1, got.access_token, True)
    assert got.refresh_token != old.refresh_token and not got.expired

def test_a_caller_cancelled_while_taking_the_refresh_lock_lets_it_go(tmp_path):
    """The refresh lock's write waits in the store's thread (another process is writing), and the call that takes it is
    cancelled meanwhile (the browser went away): once the write lands the lock is let go again, so the next call
    refreshes at once rather than waiting 40 s for the lock to expire"""
    import threading, apsw
    from fasthtml_oauth.sessions import SQLiteStore
    from fasthtml_oauth.tokens import _owner
    path = str(tmp_path / 'logins.db')
    (A,), ts, prov, auth, dp = in_process_scene(SQLiteStore(path))
    async def scene():
        old = await expire(ts, prov, auth)
        other = apsw.Connection(path)  # another process's write holds the database for 0.3 s
        other.execute('begin immediate')
        threading.Timer(0.3, lambda: other.execute('commit')).start()
        call = asyncio.create_task(A.fresh_token(auth))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError): await call
        await asyncio.sleep(0.6)
        left = await ts.store.get('token-refresh', _owner(prov, auth))
        t0 = time.monotonic()
        new = await A.fresh_token(auth)
        return left, time.monotonic() - t0, old, new
    left, took, old, new = asyncio.run(scene())
    assert (left, took < 2, new.access_token != old.access_token) == (None, True, True)

# Refresh and revocation at the real OpenID provider

TTL = 3  # seconds the provider's access tokens live

@pytest.fixture(scope='module')
def short_op():
    "An oidc-provider of this module's own, on 127.0.0.1 only, whose access tokens live `TTL` seconds"
    app_port = free_port()
    op = start_provider([f'http://127.0.0.1:{app_port}/redirect'], app_port=app_port, name='oidc-provider-short-tokens',
                        host='127.0.0.1', access_token_ttl=TTL)
    try: yield op
    finally:
        stop_provider(op.proc)
        if op.proc.stdin: op.proc.stdin.close()

def grants(op) -> list:
    "The token requests and revoked grants the provider logged so far, e.g. `grant.success refresh_token`"
    return re.findall(r'^oidc-provider (grant\.\S+(?: \S+)*)$', op.log_text(), re.M)

def wait_expired(tok):
    "Sleep until the app sees `tok` expired (then the provider does too: it counts from when it issued it)"
    time.sleep(max(0, tok.expires_at - time.time()) + 0.05)
    assert tok.expired

def test_refresh_and_revocation_at_a_real_provider(short_op, serve, tmp_path):
    """Ada and Bob log in (offline_access, prompt=consent: a refresh token) to an app keeping their tokens. Ada's calls
    to the provider's user info through `oauth.api` work; once her access token has expired one call refreshes it, once.
    With both refresh tokens revoked at the provider, her next call once the access token has expired raises
    `LoginRequired` and her token is forgotten; the page making the call sends both browsers to log in again"""
    op = short_op
    cli = OIDCAppClient(op.client_id, op.client_secret, issuer=op.issuer, timeout=5)
    app = make_app(cli, oauth_kw=dict(keep_tokens=True, login_sessions=str(tmp_path/'logins.db')))
    oauth = app.oauth

    @app.get('/profile')
    async def profile(auth):
        "A page that calls the provider's user info endpoint for the user"
        async with oauth.api(auth, op.issuer) as api: res = await api.get('/me')
        res.raise_for_status()
        return P(res.json()['email'], id='email')
    serve(app, port=op.app_port)

    sent = []  # (path, status) of each request `me` sent through `oauth.api`
    async def record(res): sent.append((res.request.url.path, res.status_code))
    def run(coro):
        "Run `coro` on a loop of its own, then close the client's connections on it (not the app's, as `aclose` would)"
        async def main():
            try: return await coro
            finally: await cli._close_here()
        return asyncio.run(main())
    async def call_me(auth) -> dict:
        async with oauth.api(auth, op.issuer, event_hooks=dict(response=[record])) as api:
            res = await api.get('/me')
            res.raise_for_status()
            return res.json()
    def me(auth) -> dict: return run(call_me(auth))
    def kept(auth): return run(oauth.token_store.load(oauth._provider(), auth))

    ada, bob = browser(), browser()
    try:
        a_sub, b_sub = expected_sub('ada@example.com'), expected_sub('bob@example.com')
        for b, login in ((ada, 'ada@example.com'), (bob, 'bob@example.com')):
            _, cb = login_to_callback(b, op, op.app_url, login)
            assert b.get(cb).headers['location'] == '/'
        first = kept(a_sub)
        assert first.refresh_token and 'offline_access' in first.scope.split() and 0 < first.expires_in <= TTL

        # A call with the token of the login: no refresh
        n = len(grants(op))
        assert me(a_sub)['email'] == 'ada@example.com' and sent == [('/me', 200)]
        assert '<p id="email">ada@example.com</p>' in ada.get(op.app_url + '/profile').text
        assert grants(op)[n:] == []

        # Once it has expired (the provider refuses it too), the next call refreshes it first, once
        wait_expired(first)
        bearer = dict(Authorization=f'Bearer {first.access_token}')
        assert httpx.get(f'{op.issuer}/me', headers=bearer).status_code == 401
        sent.clear()
        assert me(a_sub)['email'] == 'ada@example.com' and sent == [('/me', 200)]
        assert grants(op)[n:] == ['grant.success refresh_token']
        second = kept(a_sub)
        assert second.access_token != first.access_token and not second.expired and second.refresh_token
        assert me(a_sub)['email'] == 'ada@example.com' and grants(op)[n:] == ['grant.success refresh_token']

        # The refresh tokens revoked at the provider (RFC 7009): Ada's, and Bob's, whose token has expired unused
        n = len(grants(op))
        assert run(cli.revoke_async(second, 'refresh_token')) is True
        assert run(cli.revoke_async(kept(b_sub), 'refresh_token')) is True
        assert grants(op)[n:] == ['grant.revoked', 'grant.revoked']

        # Once the access token has expired, the call tries to refresh, is refused, and the token is forgotten
        wait_expired(second)
        n, sent[:] = len(grants(op)), []
        with pytest.raises(LoginRequired, match='refused to refresh'): me(a_sub)
        assert sent == [] and grants(op)[n:] == ['grant.error refresh_token invalid_grant'] and kept(a_sub) is None

        # A page making that call sends the browser to log in again, not a 500: Bob's, whose refresh the provider
        # refuses there and then (and he is logged out of the app), and Ada's, whose token is gone
        n = len(grants(op))
        for b in (bob, ada):
            res = b.get(op.app_url + '/profile')
            assert (res.status_code, res.headers.get('location')) == (303, '/login'), res.text[:300]
        assert grants(op)[n:] == ['grant.error refresh_token invalid_grant'] and kept(b_sub) is None
        assert bob.get(op.app_url + '/').headers['location'] == '/login'

        # Logging in again gets a new token, and the page back
        link = unescape(re.search(r'<a href="([^"]+)" id="login"', ada.get(op.app_url + '/login').text)[1])
        res = provider_login(ada, ada.get(op.app_url + link).headers['location'], op.issuer, 'ada@example.com')
        assert ada.get(res.headers['location']).headers['location'] == '/profile'
        assert '<p id="email">ada@example.com</p>' in ada.get(op.app_url + '/profile').text
        assert kept(a_sub).refresh_token not in (first.refresh_token, second.refresh_token)
    finally:
        ada.close(); bob.close()
