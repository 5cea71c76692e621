"Provider calls end within the client's deadline and size cap, over real loopback HTTP, with the app's memory flat"
import asyncio, socket, threading, time, tracemalloc, pytest
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route
from fasthtml_oauth import AppClient, ProviderTimeout, InvalidResponse
from fasthtml_oauth.devprovider import DevProvider
from inproc import make, browser, start, failed
from conftest import free_port

def streaming(chunk:bytes, pause:float):
    "An endpoint that answers 200 and then sends `chunk` every `pause` seconds, forever"
    async def endpoint(req):
        async def body():
            while True:
                yield chunk
                await asyncio.sleep(pause)
        return StreamingResponse(body(), media_type='application/json')
    return endpoint

misbehaving = Starlette(routes=[Route('/trickle', streaming(b' ', 0.5), methods=['POST']),
                                Route('/endless', streaming(b' ' * 65536, 0), methods=['POST'])])
CASES = [('/trickle', 'did not answer in time'), ('/endless', 'larger than 1048576 bytes')]
TIMEOUT = 2.

@pytest.mark.parametrize('path,words', CASES, ids=[p for p, _ in CASES])
def test_login_against_a_misbehaving_token_endpoint(serve, path, words):
    "A provider that trickles one byte every half second, or streams without end: the login ends on the error page in time"
    bad = serve(misbehaving)
    port = free_port()
    dp, cli, app, oauth = make(dp=DevProvider(issuer=f'http://127.0.0.1:{port}'), client_kw=dict(timeout=TIMEOUT))
    serve(dp, port=port)
    cli.transport, cli.token_url = None, bad.url + path  # real sockets for every provider call
    b = browser(app)
    callback = dp.approve(start(b, oauth), 'ada@example.com')
    tracemalloc.start()
    try:
        t0 = time.monotonic()
        res = b.get(callback)
        took, peak = time.monotonic() - t0, tracemalloc.get_traced_memory()[1]
    finally: tracemalloc.stop()
    assert words in failed(app, b, res)
    assert took < TIMEOUT + 1, took
    assert peak < 16 << 20, peak  # the 1 MiB cap, not an answer that grows until the deadline

@pytest.mark.parametrize('path,exc', [('/trickle', ProviderTimeout), ('/endless', InvalidResponse)], ids=['trickle', 'endless'])
def test_sync_and_async_drivers_keep_their_limits(serve, path, exc):
    bad = serve(misbehaving)
    cli = AppClient('id', 'secret', token_url=bad.url + path, timeout=1.)
    for call in (lambda: cli.parse_response('code', 'http://localhost/redirect'),
                 lambda: asyncio.run(cli.parse_response_async('code', 'http://localhost/redirect'))):
        t0 = time.monotonic()
        with pytest.raises(exc): call()
        assert time.monotonic() - t0 < 1. + 1, time.monotonic() - t0

@pytest.fixture
def slow_headers():
    "A raw HTTP server on loopback that answers with a status line, then one header byte every half second, without end"
    srv = socket.socket()
    srv.bind(('127.0.0.1', 0)); srv.listen()
    def handle(c):
        try:
            c.recv(65536)
            c.sendall(b'HTTP/1.1 200 OK\r\nX-Slow: ')
            while True:
                c.sendall(b'a')
                time.sleep(0.5)
        except OSError: pass
        finally: c.close()
    def serve():
        while True:
            try: c, _ = srv.accept()
            except OSError: return
            threading.Thread(target=handle, args=(c,), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    yield f'http://127.0.0.1:{srv.getsockname()[1]}'
    srv.close()

def test_headers_that_trickle_end_at_the_deadline(slow_headers):
    "A provider that renews every read timeout by sending its headers a byte at a time still ends within the deadline"
    cli = AppClient('id', 'secret', token_url=slow_headers + '/token', timeout=1.)
    for call in (lambda: cli.parse_response('code', 'http://localhost/redirect'),
                 lambda: asyncio.run(cli.parse_response_async('code', 'http://localhost/redirect'))):
        t0 = time.monotonic()
        with pytest.raises(ProviderTimeout): call()
        assert time.monotonic() - t0 < 1. + 1, time.monotonic() - t0
    cli.close()
