#!/usr/bin/env python
"""What the gate costs a request inside a running app: `python bench/gate_cost.py [--n 15000] [--lib ours|theirs] [--json]`
(about a minute; `run.py` runs it for both libraries, for the gate's target).

The benchmark's OpenID app (`servers.make_app(lib, 'oidc', ...)`), logged in once against the provider in a process
of its own, is called in this process through ASGI, one request at a time, cycling through three kinds: the gated page
`/` as the app serves it; `/` with the gate's check bypassed (ours only: the skip test still runs, and the request
still gets its user); and `/open`, the same page left ungated. Each request's CPU time is taken on its own, so slow drift of the
machine touches the three kinds alike; the medians are compared. Unlike a tight loop over the check, each check here
runs after a page has been rendered, with the processor's caches as a real app leaves them."""
import argparse, asyncio, json, os, statistics, subprocess, sys, time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import servers
from run import free_port, wait_ready

BASE = 'http://127.0.0.1:9999'  # the app's own address, as its redirect URI names it (the app is called in process)

def asgi(app, cookie:str=''):
    "An async function that sends one GET to `app` and returns `(status, headers, body)`"
    async def call(path):
        u = urlsplit(path)
        scope = dict(type='http', asgi={'version': '3.0'}, http_version='1.1', method='GET', scheme='http', path=u.path,
                     raw_path=u.path.encode(), query_string=u.query.encode(), root_path='', client=('127.0.0.1', 1),
                     headers=[(b'host', b'127.0.0.1:9999')] + ([(b'cookie', call.cookie.encode())] if call.cookie else []),
                     server=('127.0.0.1', 9999))
        async def receive(): return {'type': 'http.request', 'body': b'', 'more_body': False}
        out = dict(body=b'')
        async def send(m):
            if m['type'] == 'http.response.start':
                out['status'], out['headers'] = m['status'], {k.decode(): v.decode() for k, v in m['headers']}
            else: out['body'] += m.get('body', b'')
        await app(scope, receive, send)
        if sc := out['headers'].get('set-cookie'): call.cookie = sc.split(';')[0]
        return out['status'], out['headers'], out['body']
    call.cookie = cookie
    return call

async def log_in(app, call):
    "Log `call`'s browser in: login page, the app's start route (if it has one), the provider (over HTTP), callback"
    import httpx
    _, _, link = await call('/login')
    url = link.decode().strip()
    async with httpx.AsyncClient() as c:
        for _ in range(6):
            if not url.startswith((BASE, '/')): url = urljoin(url, (await c.get(url)).headers['location']); continue
            status, h, _ = await call(url.removeprefix(BASE))
            if h.get('location') in (None, '/'): break
            url = h['location']
    assert (status, h.get('location')) == (303, '/'), (status, h)

async def measure(n:int, lib:str='ours') -> dict:
    port = free_port()
    provider = f'http://127.0.0.1:{port}'
    p = subprocess.Popen([sys.executable, str(HERE / 'servers.py'), 'provider', '--port', str(port), '--latency', '0',
                          '--redirects', BASE + '/redirect'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(provider + '/.well-known/openid-configuration', p)
        app = servers.make_app(lib, 'oidc', provider)
        call = asgi(app)
        await log_in(app, call)
        kinds, cpu = ('gated', 'bypassed', 'ungated') if lib == 'ours' else ('gated', 'ungated'), {}
        if lib == 'ours':
            gate = app._oauth_gate
            G, checked = type(gate), type(gate)._check
            async def bypassed(self, scope, receive):
                if self._open(scope): return None
                scope['auth'] = scope['session'].get('auth')
        for i in range(n + 300):  # the first 300 warm up
            kind = kinds[i % len(kinds)]
            if lib == 'ours': G._check = bypassed if kind == 'bypassed' else checked
            t = time.process_time_ns()
            status, _, _ = await call('/open' if kind == 'ungated' else '/')
            if i >= 300: cpu.setdefault(kind, []).append((time.process_time_ns() - t) / 1000)
            assert status == 200, (kind, status)
        if lib == 'ours': G._check = checked
        return {k: statistics.median(v) for k, v in cpu.items()}
    finally:
        p.terminate(); p.wait()

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=15000, help='requests in all, a third (a half for theirs) of each kind')
    ap.add_argument('--lib', default='ours', choices=['ours', 'theirs'])
    ap.add_argument('--json', action='store_true', help='print the medians and the ratio as one JSON line')
    a = ap.parse_args()
    os.environ.setdefault('OAUTHLIB_INSECURE_TRANSPORT', '1')  # fasthtml.oauth's oauthlib refuses http links otherwise
    m = asyncio.run(measure(a.n, a.lib))
    m['ratio'] = m['ungated'] / m['gated']
    if a.json: print(json.dumps(m))
    else:
        for k in ('gated', 'bypassed', 'ungated'):
            if k in m: print(f'{k:9} {m[k]:7.0f} us of CPU per request (median)')
        check = f"the gate's check: {m['gated'] - m['bypassed']:.0f} us per request; " if 'bypassed' in m else ''
        print(f"{check}gated/ungated from CPU: {m['ratio']:.3f}")
