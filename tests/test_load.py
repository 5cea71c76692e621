"Load and isolation: 200 concurrent logins with no mix-ups, slow sync hooks that do not block the app, and two app processes sharing one secret"
import asyncio, os, random, re, subprocess, sys, threading, time
from pathlib import Path
import httpx, pytest
from fasthtml.common import FastHTML, P
from fasthtml_oauth import OAuth, OIDCAppClient
from fasthtml_oauth.devprovider import DevProvider
from conftest import free_port
from inproc import query

class Jitter(httpx.AsyncBaseTransport):
    "The DevProvider's in-process transport, with a random 0-50 ms of network latency before each provider call"
    def __init__(self, inner): self.inner = inner
    async def handle_async_request(self, req):
        await asyncio.sleep(random.uniform(0, 0.05))
        return await self.inner.handle_async_request(req)

def app_with(get_auth, port):
    "A FastHTML app for `port` whose `OAuth.get_auth` is `get_auth`, against a fresh in-process DevProvider"
    dp = DevProvider()
    dp.register('app', 'app-secret', [f'http://127.0.0.1:{port}/redirect'])
    cli = OIDCAppClient('app', 'app-secret', issuer=dp.issuer, transport=Jitter(dp.transport), timeout=30)
    app = FastHTML(secret_key='load-secret', default_hdrs=False)
    Auth = type('Auth', (OAuth,), dict(get_auth=get_auth))
    oauth = Auth(app, cli, skip=['/ping', '/sync-ping'])
    app.get('/account')(lambda auth: P(str(auth), id='auth'))
    @app.get('/ping')
    async def ping(): return 'pong'
    app.get('/sync-ping')(lambda: 'pong')  # a sync handler needs one of FastHTML's worker threads
    return dp, app, oauth

async def log_in(base, dp, oauth, email):
    "One user's whole login over real HTTP, in their own cookie jar: what `/account` then shows"
    async with httpx.AsyncClient(base_url=base, follow_redirects=False, timeout=60) as b:
        to_provider = (await b.get(oauth.login_link(None))).headers['location']
        callback = await asyncio.to_thread(dp.approve, to_provider, email)
        res = await b.get(callback)
        assert (res.status_code, res.headers.get('location')) == (303, '/'), (res.status_code, res.text[:200])
        return (await b.get('/account')).text

def test_200_concurrent_logins_no_mixups(serve):
    port, seen, lock = free_port(), [], threading.Lock()
    def get_auth(self, info, ident, session, state, token):
        with lock: seen.append((info.email, ident, token.access_token))
        return True
    dp, app, oauth = app_with(get_auth, port)
    serve(app, port=port)
    emails = [f'user{i}@example.com' for i in range(200)]
    async def main(): return await asyncio.gather(*[log_in(f'http://127.0.0.1:{port}', dp, oauth, e) for e in emails])
    pages = asyncio.run(main())
    subs = {e: dp.user_claims(e)['sub'] for e in emails}
    assert [re.search(r'id="auth">([^<]+)<', p)[1] for p in pages] == [subs[e] for e in emails]  # each user is themselves
    assert sorted(e for e, _, _ in seen) == sorted(emails)
    for email, ident, at in seen:  # get_auth saw this login's own info and token
        assert ident == subs[email] and dp.access[at]['user']['email'] == email

def test_slow_sync_get_auth_does_not_block_the_app(serve):
    "50 logins whose sync get_auth is stuck until released; meanwhile unrelated pages, async and sync, still answer (no timing involved)"
    port, release, stuck, lock = free_port(), threading.Event(), [0], threading.Lock()
    def get_auth(self, info, ident, session, state):
        with lock: stuck[0] += 1
        assert release.wait(30)
        return True
    dp, app, oauth = app_with(get_auth, port)
    serve(app, port=port)
    base = f'http://127.0.0.1:{port}'
    async def main():
        logins = [asyncio.create_task(log_in(base, dp, oauth, f'slow{i}@example.com')) for i in range(50)]
        for _ in range(600):
            if stuck[0] >= 20: break
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            pongs = [(await c.get(p)).text for _ in range(10) for p in ('/ping', '/sync-ping')]
        blocked_during_pings = stuck[0]
        release.set()
        return pongs, blocked_during_pings, await asyncio.gather(*logins)
    pongs, blocked, pages = asyncio.run(main())
    assert pongs == ['pong'] * 20 and blocked >= 20
    assert len(pages) == 50 and all('dev-' in p for p in pages)

def test_scale_out_login_starts_on_one_process_and_finishes_on_another(serve, scaleout):
    pport, a_port, b_port = free_port(), free_port(), free_port()
    dp = DevProvider(issuer=f'http://127.0.0.1:{pport}')
    dp.register('app', 'app-secret', [f'http://127.0.0.1:{b_port}/redirect'])
    serve(dp, port=pport)
    for name, port in (('A', a_port), ('B', b_port)):
        scaleout(port, APP_SECRET='shared-secret', ISSUER=dp.issuer, BASE_URL=f'http://127.0.0.1:{b_port}', NAME=name)
    with httpx.Client(follow_redirects=False) as b:  # one browser: cookies for 127.0.0.1 go to both ports
        link = re.search(r'href="(/redirect/start[^"]+)"', b.get(f'http://127.0.0.1:{a_port}/login').text)[1]
        to_provider = b.get(f'http://127.0.0.1:{a_port}{link}').headers['location']
        assert query(to_provider)['redirect_uri'] == f'http://127.0.0.1:{b_port}/redirect'
        callback = dp.approve(to_provider, 'ada@example.com')
        assert callback.startswith(f'http://127.0.0.1:{b_port}/redirect?')
        res = b.get(callback)
        assert (res.status_code, res.headers['location']) == (303, '/')
        assert f'B:{dp.user_claims("ada@example.com")["sub"]}' in b.get(f'http://127.0.0.1:{b_port}/account').text
        assert f'A:{dp.user_claims("ada@example.com")["sub"]}' in b.get(f'http://127.0.0.1:{a_port}/account').text
