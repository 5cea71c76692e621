#!/usr/bin/env python
"""API calls for the user: `oauth.api(auth, base_url)` side by side with a plain httpx client and with Authlib's
`AsyncOAuth2Client`. Two measures: the cost per call, and the refresh storm (an expired token, then 100 calls at once).
`python bench/api.py` (full, a few minutes) or `--quick`; `bench/run.py` runs them too. See bench/README.md.

    python bench/api.py [--quick] [--no-pin]
    python bench/api.py worker   # a client process, one JSON command per line on stdin (started by the harness)"""
import argparse, asyncio, json, os, platform, shutil, sys, tempfile, time, urllib.request
from urllib.parse import parse_qs, urlsplit
from run import FULL, QUICK, RESULTS, LoadGen, Procs, fmt, free_port, med, say, timed, versions, wait_ready
from servers import CLIENT_ID, CLIENT_SECRET, SECRET_KEY, USER, make_provider
from loadgen import bounded, serve

REDIRECT = 'http://127.0.0.1/redirect'  # registered, never visited: the provider approves logins at once
LIBS = ('plain', 'ours', 'plain2', 'authlib')
NAMES = dict(plain='plain httpx', ours='fasthtml_oauth', plain2='plain httpx2', authlib='authlib')
RATIOS = (('ours', 'plain'), ('authlib', 'plain2'), ('ours', 'authlib'))
CASES = ('one client', 'a client per call', 'two processes')

# ------------------------------------------------------------------------------------------------- the client process
W = {}  # this process's provider URL, transports into an in-process provider (if any), and `OAuth`

def _kw(flavour) -> dict:
    "The `transport` argument of an `httpx` or `httpx2` client: into the in-process provider, or none (real HTTP)"
    f = W['transports'].get(flavour)
    return dict(transport=f()) if f else {}

async def _keep(token, refresh_token=None, access_token=None):
    "Authlib's `update_token`: the new token kept as ours keeps it (encrypted, in the same store)"
    await W['oauth'].token_store.save('authlib', USER, token)

def client(lib, token):
    "A `lib` client for the provider's API, acting for the user with `token` (ours reads it from its token store)"
    import httpx, httpx2
    from authlib.integrations.httpx_client import AsyncOAuth2Client
    base, bearer = W['base'], {'Authorization': f"Bearer {token['access_token']}"}
    if lib == 'ours': return W['oauth'].api(USER, base, **_kw('httpx'))
    if lib == 'plain': return httpx.AsyncClient(base_url=base, headers=bearer, **_kw('httpx'))
    if lib == 'plain2': return httpx2.AsyncClient(base_url=base, headers=bearer, **_kw('httpx2'))
    return AsyncOAuth2Client(CLIENT_ID, CLIENT_SECRET, token=token, update_token=_keep,
                             token_endpoint=base + '/token', base_url=base, **_kw('httpx2'))

async def get_me(c):
    "One API call; an exception unless it succeeded"
    r = await c.get('/api/me')
    if r.status_code != 200: raise RuntimeError(f'/api/me answered {r.status_code}')

async def op_setup(provider, store):
    "Clients for the provider at URL `provider` or (`None`) for a DevProvider in this process; tokens in SQLite `store`"
    import httpx, httpx2
    from fasthtml.common import FastHTML
    from fasthtml_oauth import OAuth, AppClient
    from fasthtml_oauth.sessions import LoginSessions, SQLiteStore
    dp = None if provider else make_provider('http://127.0.0.1:8765', [REDIRECT], 0)
    base = provider or dp.issuer
    W.update(base=base, transports={} if provider else dict(httpx=lambda: httpx.ASGITransport(dp),
                                                                 httpx2=lambda: httpx2.ASGITransport(dp)))
    cli = AppClient(CLIENT_ID, CLIENT_SECRET, scope='email profile', transport=dp and dp.transport,
                    base_url=base + '/authorize', token_url=base + '/token', info_url=base + '/userinfo')
    W['oauth'] = OAuth(FastHTML(secret_key=SECRET_KEY), cli, keep_tokens=True,
                       login_sessions=LoginSessions(SQLiteStore(store)))
    return {}

async def op_login():
    "A new token for the user: a login the provider approves at once, its code exchanged by our client"
    import httpx
    cli = W['oauth'].cli
    lr = await cli.login_request_async(REDIRECT)
    async with httpx.AsyncClient(**_kw('httpx')) as c: loc = (await c.get(lr.url)).headers['location']
    code = parse_qs(urlsplit(loc).query)['code'][0]
    return dict(token=dict(await cli.parse_response_async(code, REDIRECT, lr.code_verifier)))

async def op_seed(token):
    "Keep `token` as the user's in the token store, where ours reads it on every call"
    o = W['oauth']
    await o.token_store.save(o._provider(), USER, token)
    return {}

async def op_calls(lib, token, n, conc):
    "`n` GETs of /api/me through one `lib` client, `conc` at a time (1: one after the other): CPU and wall µs per call"
    if lib == 'ours': await op_seed(token)
    async with client(lib, token) as c:
        async def run(k):
            if conc == 1:
                for _ in range(k): await get_me(c)
            elif bad := [r for r in await bounded([get_me(c) for _ in range(k)], conc) if isinstance(r, Exception)]:
                raise bad[0]
        await run(max(100, 2 * conc))  # connections, first-call costs
        c0, t0 = time.process_time(), time.perf_counter()
        await run(n)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return dict(cpu_us=cpu / n * 1e6, wall_us=wall / n * 1e6)

async def op_storm(lib, token, n, per_call, at):
    """At `at` (`time.time()`), `n` calls at once through one `lib` client, or one client each (`per_call`), all made
    with `token` (ours: with the token store's): when they started and ended, and how many failed"""
    clients = [client(lib, token) for _ in range(n if per_call else 1)]
    await asyncio.sleep(at - time.time())
    t0 = time.time()
    res = await asyncio.gather(*[get_me(clients[i % len(clients)]) for i in range(n)], return_exceptions=True)
    t1 = time.time()
    for c in clients: await c.aclose()
    bad = [repr(r) for r in res if isinstance(r, Exception)]
    return dict(t0=t0, t1=t1, errors=len(bad), error=bad[0] if bad else None)

OPS = dict(setup=op_setup, login=op_login, seed=op_seed, calls=op_calls, storm=op_storm)

# ------------------------------------------------------------------------------------------------------- the measures
def refreshes(provider) -> dict:
    "The refresh requests (answered, refused) and API hits the provider got since the last call"
    with urllib.request.urlopen(provider + '/bench/refreshes', timeout=10) as r: return json.load(r)

def bench_calls(cfg, w) -> dict:
    """Client CPU and wall µs per GET of /api/me, one after the other and 100 at a time, per client; medians over
    `api_reps` (the clients' order alternating), and the `RATIOS` of those medians"""
    rows = {}
    for rep in range(cfg['api_reps']):
        token = w('login')['token']
        for conc in (1, 100):
            for lib in LIBS if rep % 2 == 0 else LIBS[::-1]:
                r = w('calls', lib=lib, token=token, n=cfg['api_n'], conc=conc)
                rows.setdefault(str(conc), {}).setdefault(lib, []).append(r)
                say(f"  {w.name:10} {lib:7} c={conc:<3} rep {rep + 1}: CPU {r['cpu_us']:5.0f} us/call, "
                    f"wall {r['wall_us']:5.0f} us/call")
    out = {c: {lib: {k: med(x[k] for x in rs) for k in rs[0]} for lib, rs in by.items()} for c, by in rows.items()}
    for d in out.values():
        d['ratios'] = {f'{k} {x}/{y}': d[x][f'{k}_us'] / d[y][f'{k}_us'] for k in ('cpu', 'wall') for x, y in RATIOS}
    return out

def bench_storm(cfg, a, b, provider) -> dict:
    """A token that has expired, then `storm_n` calls at once, through one client, a client per call, or one client in
    each of two processes (`a` and `b`, sharing the token store): refresh requests the provider got, failed calls, and
    the time until all ended; medians over `storm_reps`. The plain clients, which cannot refresh, get a valid token:
    the time the same calls take without a refresh"""
    rows = {}
    for rep in range(cfg['storm_reps']):
        for case in CASES:
            for lib in LIBS if rep % 2 == 0 else LIBS[::-1]:
                token = a('login')['token']
                if lib in ('ours', 'authlib'): a('seed', token=(token := dict(token, expires_at=int(time.time()) - 60)))
                refreshes(provider)  # counts from here
                ws, at = ((a, b) if case == 'two processes' else (a,)), time.time() + 0.3
                for w in ws: w.send('storm', lib=lib, token=token, n=cfg['storm_n'] // len(ws), at=at,
                                    per_call=case == 'a client per call')
                rs, n = [w.recv('storm') for w in ws], refreshes(provider)
                ms = (max(r['t1'] for r in rs) - min(r['t0'] for r in rs)) * 1000
                err = next(filter(None, (r['error'] for r in rs)), None)
                row = dict(refreshes=n['refresh'] + n['refused'], refused=n['refused'], api_hits=n['api'], ms=ms,
                           errors=sum(r['errors'] for r in rs), error=err)
                rows.setdefault(case, {}).setdefault(lib, []).append(row)
                say(f"  storm, {case:17} {lib:7} rep {rep + 1}: {row['refreshes']} refresh requests ({row['refused']} "
                    f"refused), {row['errors']} failed calls, {ms:.0f} ms" + (f'; e.g. {err}' if err else ''))
    def summary(rs):
        "Medians over the repetitions, each repetition's counts and time, and an error message if any"
        return dict({k: med(r[k] for r in rs) for k in ('refreshes', 'refused', 'api_hits', 'errors', 'ms')},
                    **{f'{k}_all': [r[k] for r in rs] for k in ('refreshes', 'errors', 'ms')}, reps=len(rs),
                    error=next(filter(None, (r['error'] for r in rs)), None))
    return {case: {lib: summary(rs) for lib, rs in bylib.items()} for case, bylib in rows.items()}

def bench_api(cfg, procs) -> dict:
    """Both measures, with a provider of their own (loopback, no added latency, refresh tokens used once) and client
    processes of their own, all stopped at the end"""
    port, tmp = free_port(), tempfile.mkdtemp(prefix='bench-api-')
    provider, names = f'http://127.0.0.1:{port}', ('api-provider', 'api-http', 'api-inproc', 'api-other')
    try:
        args = ['servers.py', 'provider', '--port', str(port), '--latency', '0', '--redirects', REDIRECT, '--api']
        wait_ready(provider + '/.well-known/openid-configuration', procs.start(names[0], args))
        w = {n: LoadGen(procs, n, ('api.py', 'worker'), app=n != 'api-other') for n in names[1:]}
        for n, x in w.items():  # the two processes on the loopback provider share one token store, as an app's would
            inproc = n == 'api-inproc'
            x.send('setup', provider=None if inproc else provider, store=f"{tmp}/{'inproc' if inproc else 'shared'}.db")
        for x in w.values(): x.recv('setup')
        calls = {mode: bench_calls(cfg, w[f'api-{mode}']) for mode in ('http', 'inproc')}
        storm = bench_storm(cfg, w['api-http'], w['api-other'], provider)
    finally:
        for n in names: procs.stop(n)
        shutil.rmtree(tmp, True)
    return dict(provider_latency_s=0, n=cfg['api_n'], storm_n=cfg['storm_n'], calls=calls, storm=storm)

# ------------------------------------------------------------------------------------------------------------- report
def table(api) -> list[str]:
    "The section's lines of the results table"
    head = ['API calls for the user: GET /api/me, us per call', *NAMES.values(), *[f'{x}/{y}' for x, y in RATIOS]]
    rows = []
    for mode, where, ks in (('http', 'loopback HTTP', ('cpu', 'wall')), ('inproc', 'in-process provider', ('cpu',))):
        for conc, how in (('1', 'one at a time'), ('100', '100 at a time')):
            d = api['calls'][mode][conc]
            for k in ks:
                what = dict(cpu='client CPU', wall='wall')[k] if mode == 'http' else 'CPU (client and provider)'
                rows.append([f'  {where}, {how}: {what}', *[fmt(d[l][f'{k}_us']) for l in NAMES],
                             *[f"{d[x][f'{k}_us'] / d[y][f'{k}_us']:.2f}x" for x, y in RATIOS]])
    rows.append([f"Refresh storm: an expired token, then {api['storm_n']} calls at once (plain clients: a valid one)"])
    cells = (('refresh requests (refused)', lambda x: f"{x['refreshes']:.0f} ({x['refused']:.0f})"),
             ('failed calls', lambda x: f"{x['errors']:.0f}"), ('ms until all ended', lambda x: f"{x['ms']:.0f}"))
    for case, d in api['storm'].items():
        for what, cell in cells: rows.append([f'  {case}: {what}', *[cell(d[l]) for l in NAMES]])
    rows = [r + [''] * (len(head) - len(r)) if len(r) > 1 else r for r in rows]
    widths = [max(len(r[i]) for r in [head] + rows if len(r) > 1) for i in range(len(head))]
    def line(cells): return '  '.join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(cells, widths)))
    return [line(head), '-' * (sum(widths) + 2 * len(widths)), *[line(r).rstrip() if r[1:] else r[0] for r in rows]]

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='smaller samples, one repetition')
    ap.add_argument('--no-pin', action='store_true', help='do not pin the client process to a CPU of its own')
    a = ap.parse_args()
    cfg = QUICK if a.quick else FULL
    RESULTS.mkdir(parents=True, exist_ok=True)
    procs, phases = Procs(pin=not a.no_pin), {}
    try: res = timed(procs, phases, 'api', bench_api, cfg, procs)
    finally: procs.stop_all()
    res['meta'] = dict(mode='quick' if a.quick else 'full', date=time.strftime('%Y-%m-%d %H:%M'), cpus=os.cpu_count(),
                       python=platform.python_version(), pinned=procs.pin, phases=phases, versions=versions())
    print('\n'.join(table(res)))
    (RESULTS / 'api.json').write_text(json.dumps(res, indent=1))
    say(f"{res['meta']['mode']} run: {phases['api']['seconds']:.0f} s, other processes on this machine using "
        f"{phases['api']['other_cpus']:.2f} CPUs on average meanwhile; wrote {RESULTS / 'api.json'}")

if __name__ == '__main__':
    if sys.argv[1:] == ['worker']: serve(OPS)
    else: main()
