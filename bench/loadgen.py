"""The load generator, a process of its own: reads one JSON command per line on stdin, answers one JSON line on stdout.

Commands (`op`):
- `prepare`: prepare `n` simulated users untimed (each its own cookie jar: GET /login, follow the login link through
  the app's start route and the provider's auto-approving /authorize, stop at the callback URL).
- `fire`: send the prepared users' callbacks with `conc` concurrent users, timing each callback request alone.
  Answers latencies and wall time.
- `logins`: `n` complete logins (untimed), `conc` at a time.
- `rps`: log one user in, then request `path` with its cookie from `conc` keep-alive connections for `secs` seconds.
- `probe_start` / `probe_stop`: a logged-in user requests a page one request at a time, `gap` seconds apart, in the
  background; `probe_stop` answers each probe's start time and latency. The harness runs this in a second load-generator
  process, so that the probes' timings do not wait behind this process's own work on a burst of logins.
- `burst`: prepare `n` users untimed, then send all their callbacks at once; answers when the burst started and ended.
- `whole`: `n` whole logins as a browser makes them, `conc` at a time, all timed: the login page, the app's start route
  (where there is one), the provider, the callback, then the home page. Answers the wall time and how many requests
  each login sent to the app.
- `pages`: a logged-in user requests `path` `n` times, `conc` at a time (for the CPU of plain page requests).
- `steps_begin` / `step`: whole logins one step at a time, so the harness can measure the app's CPU per step: `steps_begin`
  makes `n` new browsers at the login page; each `step` has every browser not yet home GET its next URL, `conc` at a
  time, and follow no redirect. Answers which paths it requested (the app's, or `provider`), how many browsers are done
  (home, or failed) and how many failed."""
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

prober = {}

async def op_probe_start(app, path, gap, warm=20):
    """Log a user in, then request `path` with its cookie one request at a time, `gap` seconds apart, in the background
    until `probe_stop`; each probe's start (`time.monotonic()`, comparable across processes) and latency are kept"""
    b = await logged_in(app)
    url, samples, stop = app + path, [], asyncio.Event()
    async def run():
        n = 0
        while not stop.is_set():
            t = time.monotonic()
            r = await b.get(url)
            if r.status != 200: raise LoginFailed(f'probe answered {r.status}')
            if n >= warm: samples.append((t, r.elapsed))  # the first requests to a route pay one-off costs
            n += 1
            await asyncio.sleep(gap)
    prober.update(task=asyncio.create_task(run()), samples=samples, stop=stop)
    return {}

async def op_probe_stop():
    "Stop probing; the probes' starts and latencies"
    prober['stop'].set()
    await prober['task']
    return dict(samples=prober['samples'])

async def op_burst(app, n):
    "Prepare `n` users (untimed), then send their callbacks all at once; when the sending started and ended (`time.monotonic()`)"
    users = await prepared(app, n)
    t0 = time.monotonic()
    res = await asyncio.gather(*[callback(*u) for u in users], return_exceptions=True)
    t1 = time.monotonic()
    bad = [repr(r) for r in res if isinstance(r, Exception)]
    return dict(t0=t0, t1=t1, wall=t1 - t0, ok=n - len(bad), fail=len(bad), errors=bad[:3])

async def op_whole(app, n, conc):
    "`n` whole logins, `conc` at a time, each ending with the home page as the logged-in user"
    host = urlsplit(app).netloc
    async def one():
        b, url = await prepare(app)
        await callback(b, url)
        r = await b.get(app + '/')
        if r.status != 200: raise LoginFailed(f'/ answered {r.status} after the login')
        return sum(urlsplit(u).netloc == host for u in b.visited)
    t0 = time.perf_counter()
    res = await bounded([one() for _ in range(n)], conc)
    wall = time.perf_counter() - t0
    bad = [repr(r) for r in res if isinstance(r, Exception)]
    good = [r for r in res if not isinstance(r, Exception)]
    return dict(ok=len(good), fail=len(bad), errors=bad[:3], wall=wall, app_requests=good[0] if good else 0)

async def op_pages(app, path, n, conc):
    "A logged-in user requests `path` `n` times, `conc` at a time"
    b = await logged_in(app)
    async def one():
        r = await b.get(app + path)
        if r.status != 200: raise LoginFailed(f'{path} answered {r.status}')
    t0 = time.perf_counter()
    res = await bounded([one() for _ in range(n)], conc)
    bad = [repr(r) for r in res if isinstance(r, Exception)]
    return dict(ok=n - len(bad), fail=len(bad), errors=bad[:3], wall=time.perf_counter() - t0)

stepping = {}

async def op_steps_begin(app, n):
    "`n` new browsers, each about to GET the login page"
    stepping.update(app=app, host=urlsplit(app).netloc, users=[[Browser(pool), app + '/login'] for _ in range(n)], failed=0)
    return dict(n=n)

async def op_step(conc):
    "Every browser still on its way GETs its next URL: the login link, a redirect's location, or the home page after the callback"
    app, host, going = stepping['app'], stepping['host'], [u for u in stepping['users'] if u[1]]
    async def one(u):
        b, url = u
        u[1] = None  # home, or failed, unless there is a next URL
        try: r = await b.get(url)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):  # an app that drops connections under load
            stepping['failed'] += 1
            return urlsplit(url).path if urlsplit(url).netloc == host else 'provider'
        if r.status >= 400 or (r.status == 303 and r.header('location') == '/error'): stepping['failed'] += 1
        elif urlsplit(url).path == '/login': u[1] = urljoin(app + '/', r.text.strip())
        elif r.status in (302, 303, 307): u[1] = urljoin(url, r.header('location'))
        return urlsplit(url).path if urlsplit(url).netloc == host else 'provider'
    res = await bounded([one(u) for u in going], conc)
    if bad := [r for r in res if isinstance(r, Exception)]: raise bad[0]
    return dict(paths=sorted(set(res)), n=len(res), done=sum(u[1] is None for u in stepping['users']), failed=stepping['failed'])

ops = dict(whole=op_whole, pages=op_pages, steps_begin=op_steps_begin, step=op_step, prepare=op_prepare, fire=op_fire, logins=op_logins, rps=op_rps, probe_start=op_probe_start, probe_stop=op_probe_stop, burst=op_burst)

async def main(ops=ops):
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

def serve(ops=ops):
    "Answer the commands of `ops` on stdin until it closes, on uvloop if installed (as uvicorn would run an app)"
    try: import uvloop
    except ImportError: asyncio.run(main(ops))
    else: uvloop.run(main(ops))

if __name__ == '__main__': serve()
