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
        idle = [len(t.conns) for t in ts.idle]
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
