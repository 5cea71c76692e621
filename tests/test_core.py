"The client core over real HTTP, against the DevProvider served by uvicorn on loopback"
import asyncio, pytest
from pathlib import Path
import fasthtml_oauth
from fasthtml_oauth.core import *
from fasthtml_oauth.client import *
from fasthtml_oauth.client import *
from urllib.parse import urlsplit, parse_qs
from fasthtml_oauth.devprovider import DevProvider
from conftest import free_port

CLIENT_ID, CLIENT_SECRET, REDIRECT = 'test-client', 'test-secret', 'http://localhost:5001/redirect'

def test_package_imports():
    import fasthtml_oauth.core as core, fasthtml_oauth.client as client
    for name in ('Token', 'UserInfo', 'LoginRequest', 'redir_url', 'OAuthError', 'ProviderError', 'NetworkError'): assert name in core.__all__
    for name in ('AppClient', 'twins', 'ssl_context'): assert name in client.__all__
    for name in ('AppClient', 'OAuth', 'Token', 'GoogleAppClient', 'redir_url'): assert hasattr(fasthtml_oauth, name)
    assert fasthtml_oauth.__version__

def test_core_and_client_know_nothing_of_turns():
    "Turn-taking is an option in its own module: the client modules neither define nor import it"
    import fasthtml_oauth.core as core, fasthtml_oauth.client as client, fasthtml_oauth.oidc as oidc
    for m in (core, client, oidc):
        src = Path(m.__file__).read_text()
        assert not any(w in src for w in ('Pacer', 'in_turns', 'pacer(', '_asyncio_future_blocking')), m.__name__

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

def test_no_sync_async_twins():
    "No function body appears twice in the package with only `async`/`await`/`_async` differing: each flow is written once"
    import ast, re, collections
    bodies = collections.defaultdict(list)
    for f in Path(fasthtml_oauth.__file__).parent.glob('*.py'):
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)): continue
            body = node.body[1:] if node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) else node.body
            src = '\n'.join(ast.unparse(b) for b in body)
            if len(src.splitlines()) < 2 and len(src) < 60: continue  # one-liners that merely hand over are allowed to look alike
            norm = re.sub(r'\bawait\s+|\basync\s+|_async\b|(?:(?<=\b)|(?<=_))a(?=(?:run|fetch|transport|close|send|client)\b)', '', src)
            bodies[norm].append(f'{f.name}:{node.name}')
    twins = [names for names in bodies.values() if len(names) > 1]
    assert not twins, twins
