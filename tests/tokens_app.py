"""One app process of the token tests: `OAuth(..., keep_tokens=True)` with its logins and tokens in a shared Redis,
served by uvicorn (`uvicorn tokens_app:app`), configured by environment variables: APP_SECRET, ISSUER, BASE_URL,
REDIS_URL, PREFIX (of this test's Redis keys) and REFRESH_LOCK (`1`, the default; `0`: every process may refresh at
once, what the cross-process lock prevents).

POST /burst?n=50 makes `n` concurrent `oauth.api` calls for the logged-in user to the provider's `/api/me` as soon as
the test says go: it counts itself in the Redis key PREFIX + 'ready', then blocks on the list PREFIX + 'go', which the
test fills with one item per process, so every process starts at the same moment. It answers how the calls ended,
as counts: `ok`, `HTTP <status>`, or an exception's name.
POST /test/expire makes the user's kept token expired (its `expires_at` passed), as every process will see it;
GET /test/token describes the kept token: whether it has expired, and digests of its access and refresh tokens"""
import asyncio, collections, hashlib, os, time
import redis.asyncio
from fasthtml.common import FastHTML, P, A
from fasthtml_oauth import OAuth, OIDCAppClient
from fasthtml_oauth.client import ssl_context
from fasthtml_oauth.sessions import RedisStore
from fasthtml_oauth.tokens import TokenStore

class Auth(OAuth):
    def get_auth(self, info, ident, session, state): return True

class NoRefreshLock(RedisStore):
    "A Redis store in which every process gets the `token-refresh` lock at once: as if there were no cross-process lock"
    async def put(self, kind, key, value, ttl, tags=(), when=None):
        return True if kind == 'token-refresh' else await super().put(kind, key, value, ttl, tags, when)

env = os.environ
url, prefix, issuer = env['REDIS_URL'], env['PREFIX'], env['ISSUER']
app = FastHTML(secret_key=env['APP_SECRET'], default_hdrs=False)
lock = env.get('REFRESH_LOCK', '1') == '1'
tokens = True if lock else TokenStore(NoRefreshLock(url, prefix), secret=env['APP_SECRET'])
oauth = Auth(app, OIDCAppClient('app', 'app-secret', issuer=issuer, timeout=10), base_url=env['BASE_URL'],
             login_sessions=RedisStore(url, prefix), keep_tokens=tokens)
app.get('/login')(lambda req: A('Log in', href=oauth.login_link(req), id='login'))
app.get('/error')(lambda session: P(session.get('oauth_error'), id='error'))

tls = ssl_context()  # made now, not in the middle of the burst

async def me(auth) -> str:
    "One API call as a page would make it: how it ended"
    try:  # the library's TLS context: without it each httpx client builds its own (~0.1 s of CPU), one call at a time
        async with oauth.api(auth, issuer, verify=tls) as api: res = await api.get('/api/me')
        return 'ok' if res.status_code == 200 and res.json()['sub'] == auth else f'HTTP {res.status_code}'
    except Exception as e: return type(e).__name__

@app.post('/burst')
async def burst(auth, n:int):
    r = redis.asyncio.from_url(url)
    try:
        await r.incr(prefix + 'ready')
        if not await r.blpop([prefix + 'go'], timeout=20): return dict(error='the test never said go')
    finally: await r.aclose()
    return dict(collections.Counter(await asyncio.gather(*[me(auth) for _ in range(n)])))

def _digest(s) -> str|None: return s and hashlib.sha256(s.encode()).hexdigest()[:16]

async def describe(auth) -> dict:
    tok = await oauth.token_store.load(oauth._provider(), auth)
    return {} if tok is None else dict(expired=tok.expired, at=_digest(tok.access_token), rt=_digest(tok.refresh_token))

@app.get('/test/token')
async def token(auth): return await describe(auth)

@app.post('/test/expire')
async def expire(auth):
    tok = await oauth.token_store.load(oauth._provider(), auth)
    await oauth.token_store.save(oauth._provider(), auth, tok | dict(expires_at=time.time() - 1))
    return await describe(auth)
