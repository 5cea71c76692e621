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

@pytest.fixture
def scaleout():
    "Call `scaleout(port, **env)` to serve `tests/scaleout_app.py` in a uvicorn process of its own; all are stopped at the end"
    procs = []
    def start(port, **env):
        procs.append(subprocess.Popen([sys.executable, '-m', 'uvicorn', 'scaleout_app:app', '--host', '127.0.0.1', '--port', str(port),
                                       '--log-level', 'warning'], cwd=Path(__file__).parent, env=dict(os.environ, **env)))
        for _ in range(300):
            if procs[-1].poll() is not None: raise RuntimeError(f'app on {port} exited with {procs[-1].returncode}')
            try:
                if httpx.get(f'http://127.0.0.1:{port}/login').status_code == 200: return procs[-1]
            except httpx.TransportError: time.sleep(0.05)
        raise RuntimeError(f'app on {port} did not start')
    yield start
    for p in procs:
        p.terminate()
        try: p.wait(10)
        except subprocess.TimeoutExpired: p.kill(); p.wait(5)
