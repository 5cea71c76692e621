#!/usr/bin/env python
"""Benchmarks of fasthtml_oauth side by side with fasthtml.oauth (python-fasthtml's own) and, if installed, Authlib's
Starlette client. One command: `python bench/run.py` (full, about 20 minutes) or `python bench/run.py --quick` (about
four minutes). Writes bench/results/latest.json and latest.png; `--publish` also copies them to nbs/explains/. See bench/README.md."""
import argparse, importlib.util, json, os, platform, shutil, signal, socket, statistics, subprocess, sys, time, urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT, RESULTS = HERE.parent, HERE / 'results'
PY = sys.executable
LIBS = ('ours', 'paced', 'theirs', 'authlib')
NAMES = dict(ours='fasthtml_oauth', paced='ours, pace=True', theirs='fasthtml.oauth', authlib='authlib')
LATENCY = 0.02  # seconds the provider waits before answering each request

FULL = dict(reps=3, conc=(1, 10, 100), n={1: 30, 10: 100, 100: 300}, n_slow={1: 15, 10: 50, 100: 200}, warm=5,
            rps_secs=1., rps_reps=10, rps_conc=10, gate_cpu_n=9000, hook_n=50, hook_reps=3, idle_probes=200, hook_probes=200, hook_budget=10., gap=0.01,
            mem_logins=1000, mem_marks=(100, 250, 500, 750, 1000), mem_libs=('ours', 'theirs'), import_reps=21, authlib=True,
            whole_conc=100, whole_n=dict(ours=600, paced=600, theirs=150), whole_reps=3, page_n=2000,
            api_n=1000, api_reps=3, storm_n=100, storm_reps=5)
QUICK = dict(reps=1, conc=(1, 10, 100), n={1: 10, 10: 30, 100: 100}, n_slow={1: 5, 10: 20, 100: 100}, warm=2,
             rps_secs=0.5, rps_reps=2, rps_conc=10, gate_cpu_n=1500, hook_n=20, hook_reps=1, idle_probes=60, hook_probes=60, hook_budget=3., gap=0.01,
             mem_logins=400, mem_marks=(100, 200, 400), mem_libs=('ours',), import_reps=5, authlib=False,
             whole_conc=100, whole_n=dict(ours=200, paced=200, theirs=100), whole_reps=1, page_n=800,
             api_n=300, api_reps=1, storm_n=100, storm_reps=1)

def pct(xs, q):
    "The `q`-th percentile (0-100) of `xs`, interpolated between closest ranks"
    xs = sorted(xs)
    if not xs: return float('nan')
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    return xs[lo] if lo + 1 >= len(xs) else xs[lo] + (xs[lo + 1] - xs[lo]) * (k - lo)

med = statistics.median

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

# ---------------------------------------------------------------------------------------------------------------- processes
class Procs:
    "The processes this run started: every one is stopped by its own PID at the end"
    def __init__(self, pin:bool):
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else []
        self.pin = pin and len(cpus) >= 2
        # The app under test gets a core of its own; the provider, the load generator and this harness share the other(s)
        self.app_cpus, self.other_cpus = ({cpus[0]}, set(cpus[1:])) if self.pin else (None, None)
        if self.pin: os.sched_setaffinity(0, self.other_cpus)
        self.procs, self.logs = {}, RESULTS / 'logs'
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(self, name, args, app=False, **kw) -> subprocess.Popen:
        cpus = self.app_cpus if app else self.other_cpus
        log = open(self.logs / f'{name}.log', 'w')
        p = subprocess.Popen([PY, *args], cwd=HERE, stdout=kw.pop('stdout', log), stderr=log,
                             preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None, **kw)
        self.procs[name] = p
        return p

    def ours_secs(self) -> float:
        "CPU seconds used so far by this harness (with its finished children) and the processes it runs"
        return tree_secs(os.getpid()) + sum(cpu_secs(p.pid) for p in self.procs.values() if p.poll() is None)

    def stop(self, name, grace=10.):
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None: return
        p.terminate()
        try: p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)

    def stop_all(self):
        for name in list(self.procs): self.stop(name)

def wait_ready(url, proc, timeout=60.):
    t = time.time() + timeout
    while time.time() < t:
        if proc.poll() is not None: raise SystemExit(f'server for {url} exited; see {RESULTS / "logs"}')
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200: return
        except OSError: time.sleep(0.1)
    raise SystemExit(f'server for {url} did not start within {timeout:.0f} s')

def cpu_secs(pid) -> float:
    "User + system CPU seconds used so far by process `pid` (all its threads)"
    import psutil
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system

def busy_secs() -> float:
    "CPU seconds the whole machine has spent busy so far"
    import psutil
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, 'iowait', 0)

def tree_secs(pid) -> float:
    "CPU seconds used by process `pid` and its finished children"
    import psutil
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system

def rss(p) -> tuple[float, float]:
    "Current and peak resident memory of `p`, in MiB"
    import psutil
    cur = psutil.Process(p.pid).memory_info().rss
    peak = cur
    try:
        for line in open(f'/proc/{p.pid}/status'):
            if line.startswith('VmHWM:'): peak = int(line.split()[1]) * 1024
    except OSError: pass
    return cur / 2**20, peak / 2**20

def timed(procs:Procs, phases:dict, name, fn, *args):
    "Run one measure, noting in `phases` its duration and how much CPU other processes on this machine took meanwhile"
    b0, o0, t0 = busy_secs(), procs.ours_secs(), time.time()
    res = fn(*args)
    wall = time.time() - t0
    other = max(0., (busy_secs() - b0) - (procs.ours_secs() - o0)) / wall
    phases[name] = dict(seconds=round(wall, 1), other_cpus=round(other, 2))
    if other > 0.1: say(f'  note: other processes on this machine used {other:.2f} CPUs on average meanwhile; '
                        'expect noise')
    return res

class LoadGen:
    "A load-generator process, or another worker answering the same way: one JSON command in, one JSON answer out"
    def __init__(self, procs:Procs, name='loadgen', args=('loadgen.py',), app=False):
        self.name = name
        self.p = procs.start(name, list(args), app=app, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    def send(self, op, **kw):
        "Send a command without waiting for its answer (`recv`), so that several workers can run theirs together"
        self.p.stdin.write(json.dumps(dict(op=op, **kw)) + '\n')
        self.p.stdin.flush()
    def recv(self, op, allow_fail=False, **kw) -> dict:
        line = self.p.stdout.readline()
        if not line: raise SystemExit(f'the load generator died; see {RESULTS / "logs" / (self.name + ".log")}')
        res = json.loads(line)
        if not res.pop('ok_'): raise SystemExit(f'load generator {op} {kw}: {res["error"]}')
        if res.get('fail') and not allow_fail: raise SystemExit(f'load generator {op} {kw}: {res["fail"]} failed logins, e.g. {res["errors"]}')
        return res
    def __call__(self, op, allow_fail=False, **kw) -> dict:
        self.send(op, **kw)
        return self.recv(op, allow_fail, **kw)

# ---------------------------------------------------------------------------------------------------------------- measures
def say(*a): print(*a, file=sys.stderr, flush=True)

def bench_imports(reps) -> dict:
    "Median time of `import fasthtml_oauth` and of `import fasthtml.oauth`, each in a fresh process"
    code = 'import time; t = time.perf_counter(); import {}; print(time.perf_counter() - t)'
    mods = dict(ours='fasthtml_oauth', theirs='fasthtml.oauth')
    times = {k: [] for k in mods}
    # Both from bytecode caches, as after a pip install: this checkout is an editable install whose sources may have no
    # .pyc (and PYTHONDONTWRITEBYTECODE may be set), so caches go to a private prefix that the first round fills
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONDONTWRITEBYTECODE'} | dict(PYTHONPYCACHEPREFIX=str(RESULTS / 'pycache'))
    for i in range(reps + 1):  # the first round only warms the file cache and writes the .pyc files
        for k, m in (mods.items() if i % 2 else reversed(mods.items())):
            t = float(subprocess.run([PY, '-c', code.format(m)], capture_output=True, text=True, check=True, cwd=ROOT, env=env).stdout)
            if i: times[k].append(t * 1000)
    return {k: dict(median_ms=med(v), min_ms=min(v), samples_ms=v) for k, v in times.items()}

def bench_callbacks(cfg, lg, apps, procs, libs) -> dict:
    "Callback throughput and latency at each concurrency, per provider kind and library; medians over `reps`"
    out = {}
    for rep in range(cfg['reps']):
        for kind in ('oidc', 'oauth2'):
            for c in cfg['conc']:
                for lib in (libs if rep % 2 == 0 else libs[::-1]):
                    name = f'{lib}-{kind}'
                    n = cfg['n' if lib in ('ours', 'paced') else 'n_slow'][c]
                    lg('prepare', app=apps[name], n=n, conc=c)
                    cpu0, pcpu0 = cpu_secs(procs.procs[name].pid), cpu_secs(procs.procs['provider'].pid)
                    r = lg('fire', conc=c, allow_fail=lib not in ('ours', 'paced'))  # a library failing under load is a result; ours failing stops the run
                    cpu, pcpu = cpu_secs(procs.procs[name].pid) - cpu0, cpu_secs(procs.procs['provider'].pid) - pcpu0
                    if r['fail']: say(f"  {lib} {kind} c={c}: {r['fail']} of {n} callbacks failed, e.g. {r['errors'][0]}")
                    row = dict(rate=r['ok'] / r['wall'], p50=pct(r['lat'], 50) * 1000, p99=pct(r['lat'], 99) * 1000,
                               n=r['ok'], failed=r['fail'], app_cpu_ms=cpu / r['ok'] * 1000, provider_cpu_ms=pcpu / r['ok'] * 1000)
                    out.setdefault(kind, {}).setdefault(lib, {}).setdefault(str(c), []).append(row)
                    say(f'  callbacks {kind:6} {lib:7} c={c:<3} rep {rep + 1}: {row["rate"]:7.1f}/s  p50 {row["p50"]:7.1f} ms  p99 {row["p99"]:7.1f} ms  app CPU {row["app_cpu_ms"]:.2f} ms/login')
    for kind, bylib in out.items():
        for lib, byc in bylib.items():
            for c, rows in byc.items(): byc[c] = dict({k: med(r[k] for r in rows) for k in rows[0]}, reps=len(rows), failed=sum(r['failed'] for r in rows),
                                                      sent=sum(r['n'] + r['failed'] for r in rows), rates=[r['rate'] for r in rows])
    return out

def bench_gate(cfg, lg, apps, procs) -> dict:
    "Requests/s of the gated page and the same page ungated, for a logged-in user, alternating, medians over `rps_reps`"
    runs = [(lib, path) for lib in ('ours', 'paced', 'theirs') for path in ('/', '/open')]
    res = {r: [] for r in runs}
    cpu = {r: [] for r in runs}
    for rep in range(cfg['rps_reps']):
        for lib, path in (runs if rep % 2 == 0 else runs[::-1]):
            p = procs.procs[f'{lib}-oidc']
            c0 = cpu_secs(p.pid)
            r = lg('rps', app=apps[f'{lib}-oidc'], path=path, conc=cfg['rps_conc'], secs=cfg['rps_secs'])
            res[lib, path].append(r['rps'])
            cpu[lib, path].append((cpu_secs(p.pid) - c0) / r['ok'] * 1e6)
    out = {}
    for lib in ('ours', 'paced', 'theirs'):
        g, u = res[lib, '/'], res[lib, '/open']
        ratios = [a / b for a, b in zip(g, u)]  # each gated run against its neighbouring ungated run
        out[lib] = dict(gated_rps=med(g), ungated_rps=med(u), ratio=med(ratios), ratios=ratios,
                        gated_cpu_us=med(cpu[lib, '/']), ungated_cpu_us=med(cpu[lib, '/open']))
        out[lib]['cpu_ratio'] = out[lib]['ungated_cpu_us'] / out[lib]['gated_cpu_us']  # the same ratio from CPU time per request: less sensitive to other processes
        say(f'  gate {lib:7}: gated {med(g):7.0f}/s  ungated {med(u):7.0f}/s  ratio {med(ratios):.3f}  ({", ".join(f"{x:.3f}" for x in ratios)})')
    return out

def bench_gate_cpu(cfg) -> dict:
    """The gate's cost inside each app, by CPU per request (`gate_cost.py`: one request at a time in one process, gated
    and ungated taken in turn, medians): the gate's target, since runs of their own a second apart differ by more
    than the 2% to be measured"""
    out = {}
    for lib in ('ours', 'theirs'):
        res = subprocess.run([sys.executable, str(HERE / 'gate_cost.py'), '--lib', lib, '--n', str(cfg['gate_cpu_n']), '--json'],
                             capture_output=True, text=True)
        if res.returncode: raise SystemExit(f'gate_cost.py --lib {lib} failed: {res.stderr[-2000:]}')
        out[lib] = json.loads(res.stdout.strip().splitlines()[-1])
        say(f"  gate inside the app, {lib:7}: gated {out[lib]['gated']:.0f} us, ungated {out[lib]['ungated']:.0f} us of CPU per request: {out[lib]['ratio']:.3f}")
    return out

def hook_run(cfg, lg, prober, app, allow_fail) -> dict:
    """Probe `app`'s gated page from `prober` while idle, then while `lg` sends bursts of `hook_n` logins' callbacks at
    once, until the bursts have lasted long enough for about `hook_probes` probes (or `hook_budget` seconds went by)"""
    prober('probe_start', app=app, path='/', gap=cfg['gap'])
    time.sleep(cfg['idle_probes'] * (cfg['gap'] + 0.003))
    t_idle, bursts = time.monotonic(), []
    while not bursts or (sum(b['wall'] for b in bursts) < cfg['hook_probes'] * cfg['gap'] and time.monotonic() - t_idle < cfg['hook_budget']):
        bursts.append(lg('burst', app=app, n=cfg['hook_n'], allow_fail=allow_fail))
    samples = prober('probe_stop')['samples']
    idle = [lat for t, lat in samples if t + lat < t_idle]
    loaded = [lat for t, lat in samples if any(t < b['t1'] and t + lat > b['t0'] for b in bursts)]  # in flight during a burst
    return dict(idle=idle, loaded=loaded, bursts=len(bursts), logins_wall=med([b['wall'] for b in bursts]), fail=sum(b['fail'] for b in bursts))

def bench_hooks(cfg, lg, prober, apps) -> dict:
    "p99 latency of an unrelated (gated, logged-in) page, idle and while bursts of `hook_n` logins run, with an instant and a 0.2 s sync get_auth"
    out = {}
    for lib in ('ours', 'paced', 'theirs'):
        rows = []
        for rep in range(cfg['hook_reps']):
            row = {}
            for hook, app in (('instant', f'{lib}-oidc'), ('slow', f'{lib}-oidc-slow')):
                r = hook_run(cfg, lg, prober, apps[app], allow_fail=lib == 'theirs')
                row[f'{hook}_failed'] = r['fail']
                row[f'idle_p99_{hook}'], row[f'idle_probes_{hook}'] = pct(r['idle'], 99) * 1000, len(r['idle'])
                row[f'{hook}_p99'], row[f'{hook}_p50'] = pct(r['loaded'], 99) * 1000, pct(r['loaded'], 50) * 1000
                row[f'{hook}_logins_wall'], row[f'{hook}_probes'], row[f'{hook}_bursts'] = r['logins_wall'], len(r['loaded']), r['bursts']
            row['idle_p99'] = med([row.pop('idle_p99_instant'), row.pop('idle_p99_slow')])
            row['ratio'] = row['slow_p99'] / row['idle_p99']
            rows.append(row)
            say(f'  hooks {lib:7} rep {rep + 1}: idle p99 {row["idle_p99"]:.2f} ms; during bursts of {cfg["hook_n"]} logins: instant hook {row["instant_p99"]:.1f} ms '
                f'({row["instant_probes"]} probes, {row["instant_bursts"]} bursts), 0.2 s sync hook {row["slow_p99"]:.1f} ms ({row["slow_probes"]} probes, '
                f'{row["slow_bursts"]} bursts; x{row["ratio"]:.1f}); a burst took {row["slow_logins_wall"]:.2f} s')
        out[lib] = dict({k: (sum if k.endswith('_failed') else med)([r[k] for r in rows]) for k in rows[0]}, reps=len(rows))
    return out

def page_cpu_ms(lg, app, pid, path, cfg) -> float:
    "The app's CPU milliseconds per request of `path` by a logged-in user, `whole_conc` at a time"
    c0 = cpu_secs(pid)
    r = lg('pages', app=app, path=path, n=cfg['page_n'], conc=cfg['whole_conc'])
    return (cpu_secs(pid) - c0) / r['ok'] * 1000

def bench_whole(cfg, lg, apps, procs) -> dict:
    """Whole logins as a browser makes them (login page, start, provider, callback, home), `whole_conc` at a time: logins/s,
    and the app's CPU per login against the CPU of as many plain page requests (a logged-in user's ungated page) in the same app"""
    out = {}
    for rep in range(cfg['whole_reps']):
        for lib in (('ours', 'paced', 'theirs') if rep % 2 == 0 else ('theirs', 'paced', 'ours')):
            name, pid = f'{lib}-oidc', procs.procs[f'{lib}-oidc'].pid
            c0 = cpu_secs(pid)
            r = lg('whole', app=apps[name], n=cfg['whole_n'][lib], conc=cfg['whole_conc'], allow_fail=lib == 'theirs')
            login_cpu = (cpu_secs(pid) - c0) / r['ok'] * 1000
            page_cpu, html_cpu = (page_cpu_ms(lg, apps[name], pid, path, cfg) for path in ('/health', '/open'))
            row = dict(rate=r['ok'] / r['wall'], login_cpu_ms=login_cpu, app_requests=r['app_requests'], page_cpu_ms=page_cpu,
                       html_cpu_ms=html_cpu, cpu_ratio=login_cpu / (r['app_requests'] * page_cpu),
                       cpu_ratio_html=login_cpu / (r['app_requests'] * html_cpu), failed=r['fail'])
            out.setdefault(lib, []).append(row)
            say(f"  whole logins {lib:7} rep {rep + 1}: {row['rate']:6.1f}/s  app CPU {login_cpu:.2f} ms/login over {r['app_requests']} requests, "
                f"{page_cpu:.3f} ms per plain page: x{row['cpu_ratio']:.2f}" + (f"  ({r['fail']} failed)" if r['fail'] else ''))
    res = {lib: dict({k: med(r[k] for r in rows) for k in rows[0]}, failed=sum(r['failed'] for r in rows), rates=[r['rate'] for r in rows])
           for lib, rows in out.items()}
    for lib in res: res[lib]['steps'] = whole_steps(cfg, lg, apps[f'{lib}-oidc'], procs.procs[f'{lib}-oidc'].pid, cfg['whole_n'][lib])
    return res

STEP_NAMES = {'/login': 'login page', '/redirect/start': 'start', '/redirect': 'callback', '/': 'home'}

def whole_steps(cfg, lg, app, pid, n) -> dict:
    """Where a whole login's app CPU goes: `n` logins made one step at a time (every login's login page, then every
    login's next step, ...), `whole_conc` at a time: the app's CPU ms per request of each step"""
    out = {}
    lg('steps_begin', app=app, n=n)
    for _ in range(8):
        c0 = cpu_secs(pid)
        r = lg('step', conc=cfg['whole_conc'])
        if r['paths'] != ['provider']: out[' + '.join(STEP_NAMES.get(p, p) for p in r['paths'])] = (cpu_secs(pid) - c0) / r['n'] * 1000
        if r['done'] == n: return out
    raise SystemExit(f'whole logins one step at a time: not all {n} ended')

def bench_memory(cfg, lg, apps, procs) -> dict:
    "RSS of a fresh app process before logins and after each mark in `mem_marks` (logins 10 at a time), and its peak"
    out = {}
    for lib in cfg['mem_libs']:
        p, done, failed = procs.procs[f'{lib}-mem'], 0, 0
        marks = {0: rss(p)[0]}
        for m in cfg['mem_marks']:
            failed += lg('logins', app=apps[f'{lib}-mem'], n=m - done, conc=10, allow_fail=lib != 'ours')['fail']
            done = m
            marks[m] = rss(p)[0]
        half, last = cfg['mem_marks'][-1] // 2, cfg['mem_marks'][-1]
        base = marks.get(half) or marks[cfg['mem_marks'][0]]
        first = half if half in marks else cfg['mem_marks'][0]
        out[lib] = dict(rss_mib={str(k): v for k, v in marks.items()}, peak_mib=rss(p)[1], logins=last,
                        growth_kib_per_login=(marks[last] - base) * 1024 / (last - first), from_login=first, failed=failed)
        say(f'  memory {lib:7}: ' + ', '.join(f'{k}: {v:.1f}' for k, v in marks.items()) + f' MiB; peak {out[lib]["peak_mib"]:.1f} MiB; {first}->{last}: {out[lib]["growth_kib_per_login"]:.2f} KiB/login')
    return out

# ---------------------------------------------------------------------------------------------------------------- report
def targets(r) -> list[dict]:
    "Each target listed in bench/README.md: what it asks, the measured value, met or not"
    cb, t = r['callbacks'], []
    def add(name, value, goal, met, note=''): t.append(dict(target=name, value=value, goal=goal, met=bool(met), note=note))
    for kind, want in (('oidc', 10), ('oauth2', 8)):
        top = str(max(r['config']['conc']))
        x = cb[kind]['ours'][top]['rate'] / cb[kind]['theirs'][top]['rate']
        add(f'{kind} callback throughput @{top}, ours/theirs', f'{x:.1f}x', f'>= {want}x', x >= want)
    for kind, rt in (('oidc', 1), ('oauth2', 2)):
        p50, limit = cb[kind]['ours']['1']['p50'], 1.5 * rt * LATENCY * 1000
        add(f'{kind} single callback p50 vs {rt} provider round trip(s) of {rt * LATENCY * 1000:.0f} ms', f'{p50:.1f} ms ({p50 / (rt * LATENCY * 1000):.2f}x)', f'<= {limit:.0f} ms (1.5x)', p50 <= limit)
    g, e = r['gate_cpu']['ours']['ratio'], r['gate']['ours']
    add('gated/ungated, by app CPU per request inside the app (ours)', f'{g:.3f}', '>= 0.98', g >= 0.98,
        f"end to end {e['ratio']:.3f} requests/s, single runs from {min(e['ratios']):.2f} to {max(e['ratios']):.2f}")
    h = r['hooks']['paced']['ratio']
    add('unrelated-page p99 during logins with 0.2 s sync get_auth / idle p99 (pace=True)', f'{h:.2f}x', '<= 2x', h <= 2,
        f"needs pace=True: {r['hooks']['ours']['ratio']:.2f}x without")
    w = r['whole']
    x = w['ours']['rate'] / w['theirs']['rate']
    add(f"whole-login throughput @{r['config']['whole_conc']}, ours/theirs", f'{x:.1f}x', '>= 12x', x >= 12)
    x = w['ours']['cpu_ratio']
    add(f"app CPU of a whole login / as many plain page requests ({w['ours']['app_requests']:.0f}, ours)", f'{x:.2f}x', '<= 2x', x <= 2)
    i = r['imports']['ours']['median_ms'] / r['imports']['theirs']['median_ms']
    add('import time, ours/theirs', f'{i:.2f}x', '<= 1.0x', i <= 1.0)
    m = r['memory']['ours']
    add(f'memory flat after warm-up (RSS growth, logins {m["from_login"]}->{m["logins"]})', f'{m["growth_kib_per_login"]:.2f} KiB/login',
        '< 1 KiB/login', m['growth_kib_per_login'] < 1)
    return t

def fmt(x, unit=''):
    if x is None: return '-'
    if isinstance(x, str): return x
    return (f'{x:,.0f}' if abs(x) >= 100 else f'{x:.1f}' if abs(x) >= 10 else f'{x:.2f}') + unit

def table(r) -> str:
    "The results as a plain-text table"
    libs = [l for l in LIBS if l != 'authlib' or r['callbacks']['oidc'].get('authlib')]
    head = ['measure', *[NAMES[l] for l in libs], 'ours/theirs']
    rows = []
    def row(label, vals, ratio=None): rows.append([label, *[fmt(vals.get(l)) for l in libs], ratio or ''])
    def ratio(a, b): return f'{a / b:.2f}x' if a and b else ''
    for kind, title in (('oidc', 'OpenID provider (ours: id_token, JWKS cached; theirs: token + user info)'), ('oauth2', 'OAuth2 provider (token + user info)')):
        rows.append([f'Login callback, {title}'])
        cb = r['callbacks'][kind]
        for c in r['config']['conc']:
            for k, lab in (('rate', 'logins/s'), ('p50', 'p50 ms'), ('p99', 'p99 ms')):
                v = {l: cb[l][str(c)][k] for l in libs if l in cb}
                row(f'  {lab} @{c} concurrent', v, ratio(v['ours'], v['theirs']))
        fails = {l: sum(cb[l][str(c)]['failed'] for c in r['config']['conc']) for l in libs if l in cb}
        if any(fails.values()):
            row('  failed callbacks (HTTP 500), all runs', fails)
            row('  callbacks sent, all runs', {l: sum(cb[l][str(c)]['sent'] for c in r['config']['conc']) for l in libs if l in cb})
        row('  app CPU ms per login @100', {l: cb[l][str(max(r['config']['conc']))]['app_cpu_ms'] for l in libs if l in cb},
            ratio(cb['ours'][str(max(r['config']['conc']))]['app_cpu_ms'], cb['theirs'][str(max(r['config']['conc']))]['app_cpu_ms']))
    g = r['gate']
    rows.append(['Gated page, logged-in user (requests/s)'])
    row('  gated', {l: g[l]['gated_rps'] for l in g}, ratio(g['ours']['gated_rps'], g['theirs']['gated_rps']))
    row('  same page ungated', {l: g[l]['ungated_rps'] for l in g}, ratio(g['ours']['ungated_rps'], g['theirs']['ungated_rps']))
    row('  gated/ungated', {l: f"{g[l]['ratio']:.3f}" for l in g})
    row('  app CPU us per gated request', {l: g[l]['gated_cpu_us'] for l in g}, ratio(g['ours']['gated_cpu_us'], g['theirs']['gated_cpu_us']))
    row('  app CPU us per ungated request', {l: g[l]['ungated_cpu_us'] for l in g}, ratio(g['ours']['ungated_cpu_us'], g['theirs']['ungated_cpu_us']))
    row('  gated/ungated from CPU per request', {l: f"{g[l]['cpu_ratio']:.3f}" for l in g})
    gc = r['gate_cpu']
    row('  gated/ungated from CPU per request inside the app (gate_cost.py)', {l: f"{gc[l]['ratio']:.3f}" for l in gc})
    h = r['hooks']
    rows.append([f"Unrelated page p99 ms while bursts of {r['config']['hook_n']} logins run"])
    row('  idle', {l: h[l]['idle_p99'] for l in h}, ratio(h['ours']['idle_p99'], h['theirs']['idle_p99']))
    row('  logins with an instant sync get_auth', {l: h[l]['instant_p99'] for l in h}, ratio(h['ours']['instant_p99'], h['theirs']['instant_p99']))
    row('  logins with a 0.2 s sync get_auth', {l: h[l]['slow_p99'] for l in h}, ratio(h['ours']['slow_p99'], h['theirs']['slow_p99']))
    row('  0.2 s hook p99 / idle p99', {l: f"{h[l]['ratio']:.2f}x" for l in h})
    row('  time for one burst of logins, 0.2 s hook (s)', {l: h[l]['slow_logins_wall'] for l in h}, ratio(h['ours']['slow_logins_wall'], h['theirs']['slow_logins_wall']))
    if 'slow_probes' in h['ours']: row('  probes during bursts, 0.2 s hook (bursts)', {l: f"{h[l]['slow_probes']:.0f} ({h[l]['slow_bursts']:.0f})" for l in h})
    w = r['whole']
    rows.append([f"Whole logins (login page, start, provider, callback, home) @{r['config']['whole_conc']} concurrent, OpenID provider"])
    row('  logins/s', {l: w[l]['rate'] for l in w}, ratio(w['ours']['rate'], w['theirs']['rate']))
    row('  app CPU ms per login', {l: w[l]['login_cpu_ms'] for l in w}, ratio(w['ours']['login_cpu_ms'], w['theirs']['login_cpu_ms']))
    row('  app requests per login', {l: f"{w[l]['app_requests']:.0f}" for l in w})
    row('  app CPU ms per plain page request (/health)', {l: w[l]['page_cpu_ms'] for l in w}, ratio(w['ours']['page_cpu_ms'], w['theirs']['page_cpu_ms']))
    row('  login CPU / CPU of as many plain pages', {l: f"{w[l]['cpu_ratio']:.2f}x" for l in w})
    if 'html_cpu_ms' in w['ours']:
        row('  app CPU ms per HTML page request (/open)', {l: w[l]['html_cpu_ms'] for l in w}, ratio(w['ours']['html_cpu_ms'], w['theirs']['html_cpu_ms']))
        row('  login CPU / CPU of as many HTML pages', {l: f"{w[l]['cpu_ratio_html']:.2f}x" for l in w})
    if 'steps' in w['ours']:
        rows.append(['  app CPU ms per request of each step (the logins made one step at a time)'])
        for s in w['ours']['steps']: row(f'    {s}', {l: w[l]['steps'].get(s) for l in w}, ratio(w['ours']['steps'].get(s), w['theirs']['steps'].get(s)))
    i = r['imports']
    rows.append([f"Import time ms (median of {r['config']['import_reps']} fresh processes)"])
    row('  import', {l: i[l]['median_ms'] for l in i}, ratio(i['ours']['median_ms'], i['theirs']['median_ms']))
    m = r['memory']
    rows.append(['App process memory, RSS MiB'])
    for k in m['ours']['rss_mib']: row(f'  after {k} logins', {l: m[l]['rss_mib'].get(k) for l in m}, ratio(m['ours']['rss_mib'][k], m.get('theirs', {}).get('rss_mib', {}).get(k)))
    row('  peak', {l: m[l]['peak_mib'] for l in m}, ratio(m['ours']['peak_mib'], m.get('theirs', {}).get('peak_mib')))
    row(f"  growth KiB/login, {m['ours']['from_login']}->{m['ours']['logins']}", {l: m[l]['growth_kib_per_login'] for l in m})
    widths = [max(len(str(x[i])) for x in [head] + [r_ for r_ in rows if len(r_) > 1]) for i in range(len(head))]
    line = lambda cells: '  '.join(str(c).ljust(widths[0]) if j == 0 else str(c).rjust(widths[j]) for j, c in enumerate(cells))
    out = [line(head), '-' * (sum(widths) + 2 * len(widths))]
    for r_ in rows: out.append(r_[0] if len(r_) == 1 else line(r_))
    if r.get('api'):
        import api
        out += ['', *api.table(r['api'])]
    out += ['', 'Targets']
    w = max(len(x['target']) for x in r['targets'])
    for x in r['targets']: out.append(f"  {'MET    ' if x['met'] else 'NOT MET'}  {x['target'].ljust(w)}  {x['value']:>22}  (target {x['goal']})" + (f"; {x['note']}" if x['note'] else ''))
    out += ['', 'Phases (seconds; CPUs used on average by other processes on this machine meanwhile, a noise indicator)',
            '  ' + ', '.join(f"{k} {v['seconds']:.0f} s ({v['other_cpus']:.2f})" for k, v in r['meta']['phases'].items())]
    return '\n'.join(out)

def plot(r, path):
    "A PNG summary of the results (skipped, with a note, if matplotlib is missing)"
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        say('matplotlib is not installed: no plot (pip install -e ".[dev]")')
        return False
    colors = dict(ours='tab:blue', paced='tab:cyan', theirs='tab:red', authlib='tab:gray')
    conc = r['config']['conc']
    fig, ax = plt.subplots(2, 3, figsize=(16, 9))
    for j, (kind, title) in enumerate((('oidc', 'OpenID provider'), ('oauth2', 'OAuth2 provider'))):
        a = ax[0, j]
        for lib, d in r['callbacks'][kind].items():
            a.plot(conc, [d[str(c)]['rate'] for c in conc], 'o-', color=colors[lib], label=NAMES[lib])
        a.set(xscale='log', yscale='log', xlabel='concurrent users', ylabel='login callbacks/s', title=f'Callback throughput, {title}')
        a.legend(); a.grid(True, which='both', alpha=.3)
    a = ax[0, 2]
    for kind, ls in (('oidc', '-'), ('oauth2', '--')):
        for lib in ('ours', 'theirs'):
            d = r['callbacks'][kind][lib]
            a.plot(conc, [d[str(c)]['p50'] for c in conc], 'o' + ls, color=colors[lib], label=f'{NAMES[lib]} {kind} p50')
            a.plot(conc, [d[str(c)]['p99'] for c in conc], 'x' + ls, color=colors[lib], alpha=.5, label=f'{NAMES[lib]} {kind} p99')
    a.set(xscale='log', yscale='log', xlabel='concurrent users', ylabel='ms', title='Callback latency (provider: 20 ms per request)')
    a.legend(fontsize=7); a.grid(True, which='both', alpha=.3)
    a, g = ax[1, 0], r['gate']
    xs = range(2)
    a.bar([x - .2 for x in xs], [g[l]['ungated_rps'] for l in ('ours', 'theirs')], .4, label='ungated', color='lightgray')
    a.bar([x + .2 for x in xs], [g[l]['gated_rps'] for l in ('ours', 'theirs')], .4, label='gated', color=[colors['ours'], colors['theirs']])
    for x, l in zip(xs, ('ours', 'theirs')): a.text(x + .2, g[l]['gated_rps'], f"{g[l]['ratio']:.3f}x", ha='center', va='bottom')
    a.set_xticks(list(xs), [NAMES[l] for l in ('ours', 'theirs')]); a.set(ylabel='requests/s', title='Page for a logged-in user: gated vs ungated'); a.legend(loc='lower center')
    a, h = ax[1, 1], r['hooks']
    cases = (('idle_p99', 'idle'), ('instant_p99', 'logins,\ninstant hook'), ('slow_p99', 'logins,\n0.2 s sync hook'))
    for k, lib in enumerate(('ours', 'paced', 'theirs')):
        a.bar([x + (k - 1) * .27 for x in range(3)], [h[lib][c] for c, _ in cases], .27, color=colors[lib], label=NAMES[lib])
    a.set_xticks(range(3), [lab for _, lab in cases]); a.set(yscale='log', ylabel='p99 ms', title=f"Unrelated page p99 during {r['config']['hook_n']} logins"); a.legend()
    a, m = ax[1, 2], r['memory']
    for lib, d in m.items():
        a.plot([int(k) for k in d['rss_mib']], list(d['rss_mib'].values()), 'o-', color=colors[lib], label=f'{NAMES[lib]} (peak {d["peak_mib"]:.0f} MiB)')
    i = r['imports']
    a.set(xlabel='logins', ylabel='RSS MiB', title=f"App memory; import {i['ours']['median_ms']:.0f} ms vs {i['theirs']['median_ms']:.0f} ms")
    a.set_ylim(bottom=0); a.legend(); a.grid(True, alpha=.3)
    fig.suptitle(f"fasthtml_oauth ({r['meta'].get('commit')}) vs fasthtml.oauth {r['versions']['python-fasthtml']}: {r['meta']['mode']} run, {r['meta']['date']}, {r['meta']['cpus']} CPUs, provider on loopback with {LATENCY * 1000:.0f} ms per request")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True

# ---------------------------------------------------------------------------------------------------------------- main
def commit() -> str|None:
    "The checkout's commit, with `+dirty` if the package differs from it"
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--', 'fasthtml_oauth'], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return head + ('+dirty' if dirty else '')
    except (OSError, subprocess.CalledProcessError): return None

def versions() -> dict:
    from importlib.metadata import version, PackageNotFoundError
    v = {}
    for d in ('fasthtml-oauth', 'python-fasthtml', 'authlib', 'httpx', 'httpx2', 'uvicorn', 'starlette', 'joserfc', 'oauthlib'):
        try: v[d] = version(d)
        except PackageNotFoundError: v[d] = None
    return v

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='a small run: about four minutes')
    ap.add_argument('--publish', action='store_true', help='also copy the JSON and the plot to nbs/explains/')
    ap.add_argument('--no-authlib', action='store_true', help='leave Authlib out even if it is installed')
    ap.add_argument('--no-pin', action='store_true', help='do not pin the app to a CPU of its own')
    ap.add_argument('--gc-freeze', action='store_true', help="every app calls gc.freeze() after start-up (both libraries): what a full garbage collection costs the latency measures")
    ap.add_argument('--profile', action='store_true', help="run our apps under pyinstrument; profiles go to bench/results/profile-*.txt (numbers then include the profiler's cost)")
    a = ap.parse_args()
    cfg = dict(QUICK if a.quick else FULL)
    have_authlib = importlib.util.find_spec('authlib') is not None
    use_authlib = cfg['authlib'] and have_authlib and not a.no_authlib
    if not use_authlib:
        say('authlib: skipped (' + ('not installed: pip install authlib' if not have_authlib else '--quick' if a.quick else '--no-authlib') + ')')
    libs = ('ours', 'paced', 'theirs') + (('authlib',) if use_authlib else ())
    t_start, code_commit = time.time(), commit()
    RESULTS.mkdir(parents=True, exist_ok=True)
    procs = Procs(pin=not a.no_pin)

    def on_signal(sig, frame): raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    phases = {}
    def phase(name, fn, *args): return timed(procs, phases, name, fn, *args)
    try:
        say(f'import times ({cfg["import_reps"]} fresh processes each)...')
        imports = phase('imports', bench_imports, cfg['import_reps'])
        say(f'  import fasthtml_oauth {imports["ours"]["median_ms"]:.0f} ms, import fasthtml.oauth {imports["theirs"]["median_ms"]:.0f} ms')

        names = [f'{l}-{k}' for l in libs for k in ('oidc', 'oauth2')] + [f'{l}-oidc-slow' for l in ('ours', 'paced', 'theirs')] + [f'{l}-mem' for l in cfg['mem_libs']]
        ports = {n: free_port() for n in names + ['provider']}
        provider = f"http://127.0.0.1:{ports['provider']}"
        pp = procs.start('provider', ['servers.py', 'provider', '--port', str(ports['provider']), '--latency', str(LATENCY),
                                      '--redirects', ','.join(f'http://127.0.0.1:{ports[n]}/redirect' for n in names)])
        apps = {}
        for n in names:
            lib, kind = n.split('-')[:2]
            kind = 'oidc' if kind == 'mem' else kind
            args = ['servers.py', 'app', '--lib', lib, '--kind', kind, '--port', str(ports[n]), '--provider', provider]
            if n.endswith('-slow'): args += ['--slow', '0.2']
            if a.profile and lib in ('ours', 'paced'): args += ['--profile', str(RESULTS / f'profile-{n}.txt')]
            if a.gc_freeze: args += ['--gc-freeze']
            procs.start(n, args, app=True)
            apps[n] = f'http://127.0.0.1:{ports[n]}'
        wait_ready(provider + '/.well-known/openid-configuration', pp)
        for n in names: wait_ready(apps[n] + '/health', procs.procs[n])
        say(f'servers up: provider and {len(names)} apps' + (f'; apps pinned to CPU {procs.app_cpus}, the rest to {procs.other_cpus}' if procs.pin else ' (not pinned)'))
        lg, prober = LoadGen(procs), LoadGen(procs, 'prober')
        for n in names:
            if not n.endswith('-mem'): lg('logins', app=apps[n], n=cfg['warm'], conc=1)  # discovery, JWKS, connection pools, first-request costs

        say('login callbacks...')
        callbacks = phase('callbacks', bench_callbacks, cfg, lg, apps, procs, libs)
        say('gated page...')
        gate = phase('gate', bench_gate, cfg, lg, apps, procs)
        say("the gate's cost inside the app...")
        gate_cpu = phase('gate_cpu', bench_gate_cpu, cfg)
        say('sync get_auth hooks...')
        hooks = phase('hooks', bench_hooks, cfg, lg, prober, apps)
        say('whole logins...')
        whole = phase('whole', bench_whole, cfg, lg, apps, procs)
        say('memory...')
        memory = phase('memory', bench_memory, cfg, lg, apps, procs)
        say('API calls for the user...' if have_authlib else 'API calls for the user: skipped (they need authlib)')
        api_calls = phase('api', importlib.import_module('api').bench_api, cfg, procs) if have_authlib else None
    finally:
        procs.stop_all()

    r = dict(meta=dict(mode='quick' if a.quick else 'full', date=time.strftime('%Y-%m-%d %H:%M'), seconds=round(time.time() - t_start, 1), commit=code_commit,
                       python=platform.python_version(), machine=platform.machine(), cpus=os.cpu_count(), pinned=procs.pin,
                       provider_latency_s=LATENCY, authlib=use_authlib, profiled=a.profile, gc_frozen=a.gc_freeze, phases=phases),
             versions=versions(), config={k: (list(v) if isinstance(v, tuple) else {str(x): y for x, y in v.items()} if isinstance(v, dict) else v) for k, v in cfg.items()},
             callbacks=callbacks, gate=gate, gate_cpu=gate_cpu, hooks=hooks, whole=whole, imports=imports, memory=memory, api=api_calls)
    r['targets'] = targets(r)
    txt = table(r)
    print(txt)
    print(f"\n{r['meta']['mode']} run of fasthtml_oauth {r['meta']['commit']} took {r['meta']['seconds']:.0f} s")
    (RESULTS / 'latest.json').write_text(json.dumps(r, indent=1))
    (RESULTS / 'latest.txt').write_text(txt + '\n')
    png = plot(r, RESULTS / 'latest.png')
    say(f'wrote {RESULTS / "latest.json"}' + (f' and {RESULTS / "latest.png"}' if png else ''))
    if a.publish:
        if a.quick or a.profile or a.gc_freeze: raise SystemExit('--publish needs a plain full run: no --quick, --profile or --gc-freeze')
        dest = ROOT / 'nbs' / 'explains'
        shutil.copy(RESULTS / 'latest.json', dest / 'bench_results.json')
        if png: shutil.copy(RESULTS / 'latest.png', dest / 'bench.png')
        say(f'published to {dest / "bench_results.json"}' + (f' and {dest / "bench.png"}' if png else ''))

if __name__ == '__main__': main()
