"The client core over real HTTP, against the DevProvider served by uvicorn on loopback"
import asyncio, pytest
import fasthtml_oauth
from fasthtml_oauth.core import *
from urllib.parse import urlsplit, parse_qs
from fasthtml_oauth.devprovider import DevProvider
from conftest import free_port

CLIENT_ID, CLIENT_SECRET, REDIRECT = 'test-client', 'test-secret', 'http://localhost:5001/redirect'

def test_package_imports():
    import fasthtml_oauth.core as core
    for name in ('AppClient', 'Token', 'UserInfo', 'LoginRequest', 'redir_url', 'OAuthError', 'ProviderError', 'NetworkError'):
        assert name in core.__all__
    assert fasthtml_oauth.__version__

@pytest.fixture
def provider(serve):
    port = free_port()
    dp = DevProvider(issuer=f'http://127.0.0.1:{port}')
    dp.register(CLIENT_ID, CLIENT_SECRET, [REDIRECT])
    srv = serve(dp, port=port)
    cli = AppClient(CLIENT_ID, CLIENT_SECRET, scope='openid email', timeout=1, **dp.endpoints)
    return dp, srv, cli

def approve(dp, lr, email):
    "The user approves the login at the provider: the code it sends back to the callback"
    return parse_qs(urlsplit(dp.approve(lr.url, email)).query)['code'][0]

def test_sync_login_refresh_revoke(provider):
    prov, srv, cli = provider
    lr = cli.login_request(REDIRECT)
    assert lr.url.startswith(f'{srv.url}/authorize?')
    info = cli.retr_info(approve(prov, lr, 'ada@example.com'), lr.redirect_uri, lr.code_verifier)
    assert (info.ident, info.email, info.email_verified) == (prov.user_claims('ada@example.com')['sub'], 'ada@example.com', True)
    tok = cli.token
    new = cli.refresh(tok)
    assert new.access_token != tok.access_token and new.refresh_token == tok.refresh_token
    assert cli.revoke(new) is True
    with pytest.raises(UserInfoError, match='HTTP 401'): cli.get_info(new)

def test_async_login(provider):
    prov, srv, cli = provider
    async def main():
        lr = cli.login_request(REDIRECT)
        return await cli.retr_info_async(approve(prov, lr, 'bob@example.com'), lr.redirect_uri, lr.code_verifier), cli.token
    info, tok = asyncio.run(main())
    assert info.email == 'bob@example.com' and tok.access_token in prov.access

def test_concurrent_async_logins_keep_their_own_tokens(provider):
    prov, srv, cli = provider
    async def login(email):
        lr = cli.login_request(REDIRECT)
        info = await cli.retr_info_async(approve(prov, lr, email), lr.redirect_uri, lr.code_verifier)
        await asyncio.sleep(0.01)
        return info.email, prov.access[cli.token.access_token]['user']['email']
    async def main(): return await asyncio.gather(*[login(f'user{i}@example.com') for i in range(20)])
    for email, token_owner in asyncio.run(main()): assert email == token_owner

def test_wrong_verifier_and_replayed_code_are_refused(provider):
    prov, srv, cli = provider
    lr = cli.login_request(REDIRECT)
    code = approve(prov, lr, 'ada@example.com')
    with pytest.raises(ProviderError, match='invalid_grant'): cli.parse_response(code, lr.redirect_uri, 'x' * 64)
    with pytest.raises(ProviderError, match='invalid_grant'): cli.parse_response(code, lr.redirect_uri, lr.code_verifier)

def test_timeout_and_connection_refused(provider):
    prov, srv, cli = provider
    prov.hang_for, prov.faults['token'] = 3, 'hang'
    with pytest.raises(ProviderTimeout): cli.parse_response('c', 'http://localhost:5001/redirect')
    with pytest.raises(ProviderTimeout): asyncio.run(cli.parse_response_async('c', 'http://localhost:5001/redirect'))
    cli.token_url = f'http://127.0.0.1:{free_port()}/token'
    with pytest.raises(NetworkError, match='Could not reach'): cli.parse_response('c', 'http://localhost:5001/redirect')

def test_plain_http_elsewhere_is_refused():
    cli = AppClient('id', 'secret', base_url='http://auth.example/authorize', token_url='http://auth.example/token')
    with pytest.raises(InsecureTransport): cli.login_request('https://app.example/redirect')
    with pytest.raises(InsecureTransport): cli.parse_response('c', 'https://app.example/redirect')

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
    import ssl, fasthtml_oauth.core as core
    from fasthtml_oauth.oidc import OIDCAppClient
    keyfile, certfile = self_signed(tmp_path)
    port = free_port()
    dp = DevProvider(issuer=f'https://127.0.0.1:{port}')
    dp.register(CLIENT_ID, CLIENT_SECRET, [REDIRECT])
    serve(dp, port=port, ssl_keyfile=keyfile, ssl_certfile=certfile)
    monkeypatch.setattr(core, 'ssl_context', lambda: ssl.create_default_context(cafile=certfile))  # trust this test's certificate only
    cli = OIDCAppClient(CLIENT_ID, CLIENT_SECRET, issuer=dp.issuer, timeout=5)
    async def one(email):
        lr = await cli.login_request_async(REDIRECT)
        q = parse_qs(urlsplit(dp.approve(lr.url, email)).query)
        return await cli.finish_login_async(lr, q['code'][0], q['iss'][0])
    async def main():
        res = await asyncio.gather(*[core.in_turns(one(f'user{i}@example.com')) for i in range(10)])
        turns = core.pacer().turns
        await cli.aclose()
        return res, turns
    res, turns = asyncio.run(main())
    assert [info.email for tok, info in res] == [f'user{i}@example.com' for i in range(10)]
    assert len({tok.access_token for tok, info in res}) == 10
    assert turns >= 10 * 3  # each login: its start, the token answer, the id_token's keys or more: every resumption took a turn

def test_calls_in_tasks_a_login_starts_take_its_turns():
    "GitHub's client reads /user and /user/emails in parallel tasks: inside a login in turns, both calls take turns too, and nowhere else"
    import httpx, fasthtml_oauth.core as core
    from fasthtml_oauth.providers import GitHubAppClient
    async def handler(req):
        await asyncio.sleep(0.001)  # an answer that takes a moment, as over a network
        if req.url.path == '/user/emails': return httpx.Response(200, json=[dict(email='ada@example.com', primary=True, verified=True)])
        return httpx.Response(200, json=dict(id=1, login='ada', name='Ada'))
    cli = GitHubAppClient(CLIENT_ID, CLIENT_SECRET, transport=httpx.MockTransport(handler))
    tok = Token(access_token='at-1', token_type='bearer', scope='user:email')
    async def main():
        p = core.pacer()
        n = p.turns
        plain = await cli.get_info_async(tok)
        between = p.turns
        paced = await core.in_turns(cli.get_info_async(tok))
        return plain, paced, between - n, p.turns - between
    plain, paced, outside, inside = asyncio.run(main())
    assert plain.email == paced.email == 'ada@example.com'
    assert outside == 0  # a client used on its own takes no turns
    assert inside >= 5  # the login's start and its resumption, and at least a start and a resumption in each of the two calls' tasks
