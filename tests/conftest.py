"Fixtures shared by the tests: servers on loopback ports that stop when the tests end"
import os, socket, subprocess, sys, threading, time, pytest, uvicorn, httpx
from pathlib import Path

def free_port() -> int:
    "A TCP port on 127.0.0.1 that nothing listens on right now"
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

class Served:
    "Serve an ASGI `app` with uvicorn on a free loopback port, in a thread, until `stop`; `config` goes to uvicorn (e.g. TLS files)"
    def __init__(self, app, port=None, **config):
        self.port = port or free_port()
        self.url = f"{'https' if config.get('ssl_certfile') else 'http'}://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=self.port, log_level='warning', lifespan='off', **config))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(500):
            if self.server.started: return
            time.sleep(0.01)
        raise RuntimeError(f'server on port {self.port} did not start')

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)

@pytest.fixture
def serve():
    "Call `serve(app)` to get a running `Served`; every server is stopped at the end of the test"
    servers = []
    def start(app, **kw):
        servers.append(s := Served(app, **kw))
        return s
    yield start
    for s in servers: s.stop()

@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    "Nothing may be skipped: a skipped test is a test that did not run"
    tr = session.config.pluginmanager.get_plugin('terminalreporter')
    if tr and tr.stats.get('skipped'):
        tr.write_line(f"FAILED: {len(tr.stats['skipped'])} test(s) skipped; every test must run", red=True)
        session.exitstatus = 1

# The real OpenID provider (npm oidc-provider) for the end-to-end tests; imported here so every test module can use it
from oidc_fixture import oidc_provider  # noqa: E402,F401

def start_uvicorn(target:str, port:int, **env) -> subprocess.Popen:
    "Serve the ASGI app `target` (`module:name`, a module in tests/) with uvicorn in a process of its own on 127.0.0.1"
    return subprocess.Popen([sys.executable, '-m', 'uvicorn', target, '--host', '127.0.0.1', '--port', str(port),
                             '--log-level', 'warning'], cwd=Path(__file__).parent, env=dict(os.environ, **env))

def wait_ready(proc:subprocess.Popen, url:str, timeout:float=20):
    "Wait until `url` answers 200 (the process started by `start_uvicorn` is serving); fail if the process ends first"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None: raise RuntimeError(f'the server for {url} exited with {proc.returncode}')
        try:
            if httpx.get(url, timeout=2).status_code == 200: return proc
        except httpx.TransportError: pass
        time.sleep(0.05)
    raise RuntimeError(f'{url} did not answer within {timeout} s')

def stop_process(p:subprocess.Popen):
    "End a process we started, by its pid: SIGTERM, then SIGKILL if it has not ended within 10 s"
    if p.poll() is None: p.terminate()
    try: p.wait(10)
    except subprocess.TimeoutExpired: p.kill(); p.wait(5)

@pytest.fixture
def uvicorn_app():
    """Call `uvicorn_app(target, port, ready='/', **env)` to serve `target` (see `start_uvicorn`) and wait until `ready`
    answers 200 (`ready=None`: do not wait, call `wait_ready` later); all are stopped at the end of the test"""
    procs = []
    def start(target, port, ready='/', **env):
        procs.append(p := start_uvicorn(target, port, **env))
        return wait_ready(p, f'http://127.0.0.1:{port}{ready}') if ready is not None else p
    yield start
    for p in procs: stop_process(p)

@pytest.fixture
def scaleout(uvicorn_app):
    "Call `scaleout(port, **env)` to serve `tests/scaleout_app.py` in a uvicorn process of its own; stopped at the end"
    return lambda port, **env: uvicorn_app('scaleout_app:app', port, '/login', **env)
