"""Provider calls over real sockets: each call borrows a transport with one connection per host, connections are kept
and reused, closed when the server closes them, and verified over TLS (see "Connections" in the client's page)"""
import asyncio, ssl, pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
import fasthtml_oauth.client as client
from fasthtml_oauth import AppClient, NetworkError
from conftest import free_port
from test_pace import self_signed

async def peer(req):
    "Which connection the request came on (the client's port), and whether the server keeps it open"
    close = req.query_params.get('close') == '1'
    return JSONResponse(dict(port=req.client.port), headers={'Connection': 'close'} if close else {})

app = Starlette(routes=[Route('/peer', peer)])

def ports(cli, url, n, conc=1):
    "The client ports of `n` calls to `url`, `conc` at a time, through `cli` (on one event loop, closed at the end)"
    async def one(): return (await cli._afetch(cli.request('GET', url))).json()['port']
    async def main():
        out = []
        for i in range(0, n, conc): out += await asyncio.gather(*[one() for _ in range(min(conc, n - i))])
        ts = cli._pools[id(asyncio.get_running_loop())]
        idle = [len(t.conns) for t, _ in ts.idle]
        await cli.aclose()
        return out, idle
    return asyncio.run(main())

def test_calls_one_after_another_share_one_connection(serve):
    s = serve(app)
    got, idle = ports(AppClient('id', 'secret'), s.url + '/peer', 5)
    assert len(set(got)) == 1, got  # kept alive and reused
    assert idle == [1]               # one transport, holding one connection

def test_concurrent_calls_borrow_a_transport_each_and_keep_them(serve):
    s = serve(app)
    cli = AppClient('id', 'secret')
    got, idle = ports(cli, s.url + '/peer', 60, conc=20)
    assert len(set(got)) == 20, len(set(got))  # 20 connections, each reused by the later rounds
    assert sorted(idle) == [1] * 20

def test_idle_transports_beyond_the_limit_are_closed(serve):
    s = serve(app)
    cli = AppClient('id', 'secret')
    cli.idle_transports = 3
    got, idle = ports(cli, s.url + '/peer', 40, conc=20)
    assert idle == [1, 1, 1]
    assert len(set(got)) > 20  # the rounds after the first opened new connections for the transports that were closed

def test_a_connection_the_server_closes_is_replaced(serve):
    s = serve(app)
    got, idle = ports(AppClient('id', 'secret'), s.url + '/peer?close=1', 3)
    assert len(set(got)) == 3  # every call on a new connection, none failed

def test_tls_is_verified(serve, tmp_path, monkeypatch):
    keyfile, certfile = self_signed(tmp_path)
    s = serve(app, ssl_keyfile=keyfile, ssl_certfile=certfile)
    assert s.url.startswith('https://')
    monkeypatch.setattr(client, 'ssl_context', lambda: ssl.create_default_context(cafile=certfile))
    got, _ = ports(AppClient('id', 'secret', timeout=5), s.url + '/peer', 3)
    assert len(set(got)) == 1  # over TLS too, one connection
    monkeypatch.setattr(client, 'ssl_context', lambda: ssl.create_default_context())  # the system's CAs: not this certificate
    with pytest.raises(NetworkError, match='Could not reach the provider at 127.0.0.1'):
        ports(AppClient('id', 'secret', timeout=5), s.url + '/peer', 1)

def test_nothing_listening_is_a_network_error():
    cli = AppClient('id', 'secret', timeout=5)
    with pytest.raises(NetworkError, match='Could not reach'):
        ports(cli, f'http://127.0.0.1:{free_port()}/peer', 1)

# ---------------------------------------------------------------------------------------------- misbehaving servers
class Raw:
    "A raw HTTP server on 127.0.0.1 in a thread of its own: `handler(reader, writer)` per connection; `.conns` counts them"
    def __init__(self, handler, ssl=None):
        import threading
        self.handler, self.conns, self.loop, started = handler, 0, asyncio.new_event_loop(), threading.Event()
        async def main():
            tasks = set()
            async def on(r, w):
                self.conns += 1
                tasks.add(asyncio.current_task())
                try: await handler(r, w)
                except BaseException: pass  # the client went away, or the server is stopping
                finally: w.close()
            self.server, self.stopped = await asyncio.start_server(on, '127.0.0.1', 0, ssl=ssl), asyncio.Event()
            self.url = f"{'https' if ssl else 'http'}://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
            started.set()
            await self.stopped.wait()
            self.server.close()
            for t in tasks: t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(main()), daemon=True)
        self.thread.start()
        started.wait(5)
    def stop(self):
        self.loop.call_soon_threadsafe(self.stopped.set)
        self.thread.join(5)

async def request(r):
    "One request's head, read from `r`"
    head = await r.readuntil(b'\r\n\r\n')
    n = next((int(l.split(b':')[1]) for l in head.split(b'\r\n') if l.lower().startswith(b'content-length:')), 0)
    if n: await r.readexactly(n)
    return head.split(b' ')[1]

def answer(body:bytes, status=b'200 OK') -> bytes:
    return b'HTTP/1.1 ' + status + b'\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n' % len(body) + body

@pytest.fixture
def raw():
    servers = []
    def start(handler, ssl=None):
        servers.append(s := Raw(handler, ssl))
        return s
    yield start
    for s in servers: s.stop()

def bodies(cli, urls):
    "The answers to calls of `urls`, one after the other, through `cli`"
    async def main():
        out = [(await cli._afetch(cli.request('POST', u, content=b'code=x'))).content for u in urls]
        await cli.aclose()
        return out
    return asyncio.run(main())

def test_bytes_after_an_answer_never_reach_the_next_call(raw):
    "A server that sends more than its answer (a second answer glued on, a body after a 204): the connection is not reused"
    async def handler(r, w):
        while True:
            path = await request(r)
            if path == b'/glued': w.write(answer(b'{"for": "ada"}') + answer(b'{"for": "nobody"}'))
            elif path == b'/nocontent': w.write(answer(b'', b'204 No Content') + b'{"for": "ada"}')
            else: w.write(answer(b'{"for": "%s"}' % path[1:]))
            await w.drain()
    s = raw(handler)
    got = bodies(AppClient('id', 'secret'), [s.url + '/glued', s.url + '/bob', s.url + '/nocontent', s.url + '/cy'])
    assert got == [b'{"for": "ada"}', b'{"for": "bob"}', b'', b'{"for": "cy"}']

def test_over_tls_an_answer_sent_after_the_answer_never_reaches_the_next_call(raw, tmp_path, monkeypatch):
    "Two writes make two TLS records that arrive together: the second, not decrypted yet, still keeps the connection from reuse"
    keyfile, certfile = self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certfile, keyfile)
    async def handler(r, w):
        while True:
            path = await request(r)
            if path == b'/ada':
                w.write(answer(b'{"for": "ada"}')); w.write(answer(b'{"for": "nobody"}'))
            else:
                await asyncio.sleep(0.2)  # so that an answer already waiting would be read first
                w.write(answer(b'{"for": "%s"}' % path[1:]))
            await w.drain()
    s = raw(handler, ssl=ctx)
    monkeypatch.setattr(client, 'ssl_context', lambda: ssl.create_default_context(cafile=certfile))
    got = bodies(AppClient('id', 'secret', timeout=5), [s.url + '/ada', s.url + '/bob'])
    assert got == [b'{"for": "ada"}', b'{"for": "bob"}'] and s.conns == 2

def test_a_post_the_provider_received_is_never_sent_again(raw):
    "The provider takes a code exchange on a kept connection, then drops it without an answer: the code is not sent twice"
    seen = []
    async def handler(r, w):
        while True:
            seen.append(path := await request(r))
            if path == b'/token': w.transport.abort(); return
            w.write(answer(b'{}')); await w.drain()
    s = raw(handler)
    async def main():
        cli = AppClient('id', 'secret', timeout=3)
        await cli._afetch(cli.request('GET', s.url + '/.well-known/openid-configuration'))  # leaves a kept connection
        try: await cli._afetch(cli.request('POST', s.url + '/token', content=b'code=once'))
        finally: await cli.aclose()
    with pytest.raises(NetworkError): asyncio.run(main())
    assert seen == [b'/.well-known/openid-configuration', b'/token']

def test_a_kept_connection_the_server_closed_is_retried_once(raw):
    "The server closes idle connections after 50 ms: calls 40-60 ms apart still all succeed, each on the connection it could use"
    async def handler(r, w):
        while True:
            await asyncio.wait_for(request(r), 0.05)
            w.write(answer(b'{}')); await w.drain()
    s = raw(handler)
    async def main():
        cli = AppClient('id', 'secret', timeout=3)
        for i in range(40):
            await cli._afetch(cli.request('POST', s.url + '/token', content=b'x=1'))
            await asyncio.sleep(0.04 + 0.02 * (i % 2))
        await cli.aclose()
    asyncio.run(main())  # a NetworkError would fail the test

def test_closing_a_client_ends_its_sync_calls(raw):
    "`close()` while a sync call waits for the provider: the call fails with NetworkError at once, it is not left waiting"
    import threading, time
    async def handler(r, w):
        await request(r)
        await asyncio.sleep(30)
    s = raw(handler)
    cli, out = AppClient('id', 'secret', timeout=20), []
    def call():
        try: cli._fetch(cli.request('GET', s.url + '/slow'))
        except Exception as e: out.append(e)
    t = threading.Thread(target=call)
    t.start(); time.sleep(0.3)
    t0 = time.monotonic()
    cli.close()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - t0 < 2
    assert isinstance(out[0], NetworkError) and 'closed' in str(out[0])
