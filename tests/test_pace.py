"Turn-taking (`OAuth(..., pace=True)`) over real TLS, and what it leaves alone"
import asyncio, ssl
from urllib.parse import urlsplit, parse_qs
import httpx
import fasthtml_oauth.client as client
from fasthtml_oauth.core import Token
from fasthtml_oauth.pace import in_turns, pacer
from fasthtml_oauth.devprovider import DevProvider
from conftest import free_port

CLIENT_ID, CLIENT_SECRET, REDIRECT = 'test-client', 'test-secret', 'http://localhost:5001/redirect'

def self_signed(dir):
    "A key and a self-signed certificate for 127.0.0.1, written to `dir`: their paths"
    import datetime, ipaddress
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, '127.0.0.1')])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    kp, cp = dir / 'key.pem', dir / 'cert.pem'
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(kp), str(cp)

def test_https_logins_take_turns_at_every_step(serve, tmp_path, monkeypatch):
    "Over TLS, as with every real provider, concurrent logins run in turns (`in_turns`) step by step, and each still gets its own token"
    from fasthtml_oauth.oidc import OIDCAppClient
    keyfile, certfile = self_signed(tmp_path)
    port = free_port()
    dp = DevProvider(issuer=f'https://127.0.0.1:{port}')
    dp.register(CLIENT_ID, CLIENT_SECRET, [REDIRECT])
    serve(dp, port=port, ssl_keyfile=keyfile, ssl_certfile=certfile)
    monkeypatch.setattr(client, 'ssl_context', lambda: ssl.create_default_context(cafile=certfile))  # trust this test's certificate only
    cli = OIDCAppClient(CLIENT_ID, CLIENT_SECRET, issuer=dp.issuer, timeout=5)
    async def one(email):
        lr = await cli.login_request_async(REDIRECT)
        q = parse_qs(urlsplit(dp.approve(lr.url, email)).query)
        return await cli.finish_login_async(lr, q['code'][0], q['iss'][0])
    async def main():
        res = await asyncio.gather(*[in_turns(one(f'user{i}@example.com')) for i in range(10)])
        turns = pacer().turns
        await cli.aclose()
        return res, turns
    res, turns = asyncio.run(main())
    assert [info.email for tok, info in res] == [f'user{i}@example.com' for i in range(10)]
    assert len({tok.access_token for tok, info in res}) == 10
    assert turns >= 10 * 3  # each login: its start, the token answer, the id_token's keys or more: every resumption took a turn

def test_parallel_calls_run_outside_the_login_turns():
    "GitHub's client reads /user and /user/emails at once, in tasks of their own: inside a login in turns they work as they do outside"
    from fasthtml_oauth.providers import GitHubAppClient
    async def handler(req):
        await asyncio.sleep(0.001)  # an answer that takes a moment, as over a network
        if req.url.path == '/user/emails': return httpx.Response(200, json=[dict(email='ada@example.com', primary=True, verified=True)])
        return httpx.Response(200, json=dict(id=1, login='ada', name='Ada'))
    cli = GitHubAppClient(CLIENT_ID, CLIENT_SECRET, transport=httpx.MockTransport(handler))
    tok = Token(access_token='at-1', token_type='bearer', scope='user:email')
    async def main():
        p = pacer()
        n = p.turns
        plain = await cli.get_info_async(tok)
        between = p.turns
        paced = await in_turns(cli.get_info_async(tok))
        return plain, paced, between - n, p.turns - between
    plain, paced, outside, inside = asyncio.run(main())
    assert plain.email == paced.email == 'ada@example.com'
    assert outside == 0  # a client used on its own takes no turns
    assert inside >= 2  # the login's own start and resumption took turns

def test_an_app_without_pace_has_no_pacing_middleware():
    from fasthtml.common import FastHTML
    from fasthtml_oauth import OAuth, OIDCAppClient
    app = FastHTML(secret_key='s')
    OAuth(app, OIDCAppClient('id', 'secret', issuer='https://issuer.example'))
    assert [m.cls.__name__ for m in app.user_middleware] == ['SessionMiddleware', 'Gate']
