"""The load generator, a process of its own: reads one JSON command per line on stdin, answers one JSON line on stdout.

Commands (`op`):
- `prepare`: prepare `n` simulated users untimed (each its own cookie jar: GET /login, follow the login link through
  the app's start route and the provider's auto-approving /authorize, stop at the callback URL).
- `fire`: send the prepared users' callbacks with `conc` concurrent users, timing each callback request alone.
  Answers latencies and wall time.
- `logins`: `n` complete logins (untimed), `conc` at a time.
- `rps`: log one user in, then request `path` with its cookie from `conc` keep-alive connections for `secs` seconds.
- `hook`: an unrelated page's latency (one probe every `gap` seconds) while idle, then while `n` logins' callbacks run at once."""
import asyncio, json, sys, time
from urllib.parse import urlsplit, urljoin
from rawhttp import Pool, Browser

pool = Pool()

class LoginFailed(Exception): pass

async def prepare(app:str) -> tuple:
    "One new browser at the moment it is sent back to the app: the browser and the callback URL (untimed steps)"
    b = Browser(pool)
    r = await b.get(app + '/login')
    if r.status != 200: raise LoginFailed(f'/login answered {r.status}')
    url, host = urljoin(app + '/', r.text.strip()), urlsplit(app).netloc
    for _ in range(6):
        u = urlsplit(url)
        if u.netloc == host and u.path == '/redirect': return b, url
        r = await b.get(url)
        if r.status not in (302, 303, 307) or not r.header('location'): raise LoginFailed(f'{u.path} answered {r.status}: {r.text[:200]}')
        url = urljoin(url, r.header('location'))
    raise LoginFailed('too many redirects before the callback')

async def callback(b:Browser, url:str) -> float:
    "Send the callback; its latency, or `LoginFailed` unless the app logged the user in (303 to /)"
    r = await b.get(url)
    if r.status != 303 or r.header('location') != '/':
        raise LoginFailed(f'callback answered {r.status} -> {r.header("location")}' + (f': {(await b.get(urljoin(url, r.header("location")))).text[:300]}' if r.header('location') == '/error' else ''))
    return r.elapsed

async def bounded(coros, limit:int):
    "Run `coros` with at most `limit` at a time, returning results (exceptions included) in order"
    sem = asyncio.Semaphore(limit)
    async def one(c):
        async with sem: return await c
    return await asyncio.gather(*[one(c) for c in coros], return_exceptions=True)

async def prepared(app, n, conc=50):
    res = await bounded([prepare(app) for _ in range(n)], conc)
    if bad := [r for r in res if isinstance(r, Exception)]: raise LoginFailed(f'{len(bad)} of {n} logins could not be prepared: {bad[0]!r}')
    return res

async def logged_in(app) -> Browser:
    b, url = await prepare(app)
    await callback(b, url)
    return b

prepared_users = []

async def op_prepare(app, n, conc, warm=0):
    "Prepare `n` users for `fire` (untimed): each stopped at its callback URL"
    if warm: await op_logins(app, warm, min(warm, 10))
    prepared_users[:] = await prepared(app, n, min(max(conc, 10), 100))
    return dict(n=n)

async def op_fire(conc):
    "Send the prepared users' callbacks, `conc` users at a time, timing each callback request"
    q = asyncio.Queue()
    for u in prepared_users: q.put_nowait(u)
    prepared_users.clear()
    lats, errors = [], []
    async def worker():
        while not q.empty():
            b, url = q.get_nowait()
            try: lats.append(await callback(b, url))
            except Exception as e: errors.append(repr(e))
    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(conc)])
    wall = time.perf_counter() - t0
    return dict(lat=lats, wall=wall, ok=len(lats), fail=len(errors), errors=errors[:3])

async def op_logins(app, n, conc):
    t0 = time.perf_counter()
    async def one():
        b, url = await prepare(app)
        await callback(b, url)
    res = await bounded([one() for _ in range(n)], conc)
    bad = [repr(r) for r in res if isinstance(r, Exception)]
    return dict(ok=n - len(bad), fail=len(bad), errors=bad[:3], wall=time.perf_counter() - t0)

async def op_rps(app, path, conc, secs):
    b = await logged_in(app)
    url = app + path
    r = await b.get(url)
    if r.status != 200: raise LoginFailed(f'{path} answered {r.status} for a logged-in user')
    ok, bad, stop = 0, 0, time.perf_counter() + secs
    async def worker():
        nonlocal ok, bad
        while time.perf_counter() < stop:
            r = await b.get(url)
            if r.status == 200: ok += 1
            else: bad += 1
    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(conc)])
    wall = time.perf_counter() - t0
    return dict(ok=ok, bad=bad, wall=wall, rps=ok / wall)

async def probe(b, url, gap, stop, out, min_probes=0):
    "Request `url` one at a time, `gap` seconds apart, until `stop` is set (and at least `min_probes` are done)"
    while not stop.is_set() or len(out) < min_probes:
        r = await b.get(url)
        if r.status != 200: raise LoginFailed(f'probe answered {r.status}')
        out.append(r.elapsed)
        await asyncio.sleep(gap)

async def op_hook(app, path, n, gap, idle_probes):
    b = await logged_in(app)
    url = app + path
    idle, stop = [], asyncio.Event()
    stop.set()
    await probe(b, url, gap, stop, [], 20)  # warm-up: first requests to a route pay one-off costs
    await probe(b, url, gap, stop, idle, idle_probes)
    users = await prepared(app, n)
    loaded, stop = [], asyncio.Event()
    task = asyncio.create_task(probe(b, url, gap, stop, loaded))
    await asyncio.sleep(gap)
    t0 = time.perf_counter()
    res = await asyncio.gather(*[callback(*u) for u in users], return_exceptions=True)
    wall = time.perf_counter() - t0
    stop.set()
    await task
    bad = [repr(r) for r in res if isinstance(r, Exception)]
    return dict(idle=idle, loaded=loaded, logins_wall=wall, ok=n - len(bad), fail=len(bad), errors=bad[:3])

ops = dict(prepare=op_prepare, fire=op_fire, logins=op_logins, rps=op_rps, hook=op_hook)

async def main():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        op = cmd.pop('op')
        try: res = dict(ok_=True, **await ops[op](**cmd))
        except Exception as e: res = dict(ok_=False, error=repr(e))
        sys.stdout.write(json.dumps(res) + '\n')
        sys.stdout.flush()
    pool.close()

if __name__ == '__main__':
    try: import uvloop
    except ImportError: asyncio.run(main())
    else: uvloop.run(main())
