"The DevProvider served by uvicorn on a loopback port, driven over real HTTP as a browser and an app would"
import asyncio, re, httpx, pytest
from urllib.parse import urlsplit, parse_qs
from fasthtml_oauth.core import *
from fasthtml_oauth.client import *
from fasthtml_oauth.devprovider import DevProvider
from conftest import free_port

REDIRECT = 'http://localhost:5001/redirect'

@pytest.fixture
def served(serve):
    port = free_port()
    dp = DevProvider(issuer=f'http://127.0.0.1:{port}')
    dp.register('demo-app', 'demo-secret', [REDIRECT])
    serve(dp, port=port)
    return dp, AppClient('demo-app', 'demo-secret', scope='openid email profile', timeout=2, **dp.endpoints)

def browser_sign_in(url, email, name):
    "What a browser does: load the sign-in page, submit its form, and read where the provider sends it"
    with httpx.Client() as browser:
        page = browser.get(url)
        assert page.status_code == 200 and 'Development provider' in page.text
        form = page.text[page.text.index('<form'):page.text.index('</form>')]
        action = re.search(r'action="([^"]+)"', form)[1]
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))
        res = browser.post(action, data=dict(fields, email=email, name=name))
    assert res.status_code == 303
    return res.headers['location']

def test_login_over_real_http(served):
    dp, cli = served
    lr = cli.login_request(REDIRECT)
    back = urlsplit(browser_sign_in(lr.url, 'ada@example.com', 'Ada Lovelace'))
    q = {k: v[0] for k, v in parse_qs(back.query).items()}
    assert f'{back.scheme}://{back.netloc}{back.path}' == REDIRECT and q['state'] == lr.state and q['iss'] == dp.issuer
    info = cli.retr_info(q['code'], lr.redirect_uri, lr.code_verifier)
    assert (info.email, info.name, info.email_verified) == ('ada@example.com', 'Ada Lovelace', True)
    tok = cli.token
    assert tok.id_token and tok.refresh_token
    new = asyncio.run(cli.refresh_async(tok))
    assert asyncio.run(cli.get_info_async(new)).email == 'ada@example.com'
    assert cli.revoke(new, 'refresh_token')
    with pytest.raises(UserInfoError): cli.get_info(new)

def test_discovery_and_jwks_over_real_http(served):
    dp, cli = served
    disc = httpx.get(dp.url('discovery')).json()
    assert disc['issuer'] == dp.issuer and disc['jwks_uri'] == dp.url('jwks')
    res = httpx.get(disc['jwks_uri'])
    assert [k['kid'] for k in res.json()['keys']] == [dp.key.kid] and res.headers['x-dev-provider'].startswith('DevProvider')

def test_forced_hang_times_out_over_real_http(served):
    dp, cli = served
    dp.hang_for, dp.faults['token'] = 2, 'hang'
    lr = cli.login_request(REDIRECT)
    code = parse_qs(urlsplit(dp.approve(lr.url, 'ada@example.com')).query)['code'][0]
    quick = AppClient('demo-app', 'demo-secret', timeout=0.5, **dp.endpoints)
    with pytest.raises(ProviderTimeout): quick.parse_response(code, lr.redirect_uri, lr.code_verifier)

def test_oidc_client_over_real_http(served):
    from fasthtml_oauth.oidc import OIDCAppClient, IdTokenIssuerError
    dp, _ = served
    cli = OIDCAppClient('demo-app', 'demo-secret', issuer=dp.issuer, timeout=2)
    async def login():
        lr = await cli.login_request_async(REDIRECT)
        q = {k: v[0] for k, v in parse_qs(urlsplit(dp.approve(lr.url, 'ada@example.com')).query).items()}
        return await cli.finish_login_async(lr, q['code'], q['iss'])
    tok, info = asyncio.run(login())
    assert info.email == 'ada@example.com' and dp.hits['userinfo'] == 0
    dp.faults['id_token'] = 'wrong_iss'
    with pytest.raises(IdTokenIssuerError): asyncio.run(login())
