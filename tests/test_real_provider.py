"""End to end against a real OpenID provider (npm `oidc-provider`, OpenID Certified) on loopback: a FastHTML app using
`OAuth` with `OIDCAppClient(issuer=...)`, served by uvicorn, logged into over real HTTP by a scripted user who signs in and
consents on the provider's own pages; then refresh, revocation and logout; then what the provider refuses (a replayed
code, a wrong PKCE verifier, a redirect URI it does not know, a wrong secret, a cancelled login, a provider gone at the
callback), each ending at the app's error page, never a 500; and the RFC 9207 `iss` check, form_post, parallel logins"""
import asyncio, dataclasses, re, secrets, time
from html import unescape
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
import httpx, pytest
from fasthtml_oauth import OIDCAppClient, Token, ProviderError, UserInfoError
from oidc_fixture import SCOPE, expected_sub, make_app, provider_login, provider_logout, start_provider, stop_provider

clients = []  # the clients the tests call directly, whose connection pools `run` closes

def run(coro):
    "Run one of the client's coroutines from the (synchronous) test, on a loop of its own, closing the pools it opened there"
    async def main():
        try: return await coro
        finally:
            for c in clients: await c.aclose()
    return asyncio.run(main())

def query(url) -> dict: return dict(parse_qsl(urlsplit(url).query))

def with_query(url, **changes) -> str:
    "`url` with its query parameters changed (`None` removes one)"
    q = {k: v for k, v in (query(url) | changes).items() if v is not None}
    return urlunsplit(urlsplit(url)._replace(query=urlencode(q)))

@pytest.fixture
def op(oidc_provider): return oidc_provider

@pytest.fixture
def cli(op):
    clients.append(c := OIDCAppClient(op.client_id, op.client_secret, issuer=op.issuer, timeout=5))
    yield c
    clients.remove(c)

def browser(): return httpx.Client(follow_redirects=False, timeout=10)

def start_login(b, app_url) -> str:
    "Open the app's home page logged out, follow it to the login page and click the link: the provider URL we are sent to"
    res = b.get(app_url + '/')
    assert (res.status_code, res.headers['location']) == (303, '/login')
    link = unescape(re.search(r'<a href="([^"]+)" id="login"', b.get(app_url + '/login').text)[1])
    assert re.fullmatch(r'/\w+/start\?t=[\w.-]+', link), link
    res = b.get(app_url + link)
    assert res.status_code == 303, res.text
    return res.headers['location']

def login_to_callback(b, op, app_url, login='ada@example.com') -> tuple[str, str]:
    "The provider URL the app sent us to, and the callback URL (with code, state, iss) the provider sends us back with"
    auth_url = start_login(b, app_url)
    res = provider_login(b, auth_url, op.issuer, login)
    assert res.is_redirect, f"{res.status_code} at {res.url}: {re.sub(r'<[^>]+>', ' ', res.text.split('</style>')[-1])[:500]}"
    return auth_url, res.headers['location']

def error_message(b, app_url) -> str:
    page = b.get(app_url + '/error')
    assert page.status_code == 200
    return unescape(re.search(r'<p id="error">(.*?)</p>', page.text, re.S)[1])

def ends_at_error(b, app_url, res) -> str:
    "Check `res` sends the browser to the app's error page, and return the message shown there"
    assert res.status_code == 303, f"expected a redirect to /error, got {res.status_code}: {res.text[:300]}"
    assert res.headers['location'] == '/error'
    return error_message(b, app_url)

def client_login(cli, op, login='ada@example.com'):
    "A login started with the client directly (no app): the `LoginRequest`, and the code and iss the provider answers with"
    lr = run(cli.login_request_async(op.redirect_uri, SCOPE, prompt='consent'))
    with browser() as b: res = provider_login(b, lr.url, op.issuer, login)
    cb = query(res.headers['location'])
    assert cb['state'] == lr.state and cb['iss'] == op.issuer
    return lr, cb['code'], cb['iss']

def test_login_refresh_revoke_logout(op, cli, serve):
    app = make_app(cli)
    site = serve(app, port=op.app_port)
    with browser() as b:
        auth_url, cb = login_to_callback(b, op, site.url)
        # What the app sent to the provider: PKCE S256, a nonce, a fresh state, the registered callback
        q = query(auth_url)
        assert auth_url.startswith(op.issuer + '/auth?')
        assert q['client_id'] == op.client_id and q['redirect_uri'] == op.redirect_uri and q['response_type'] == 'code'
        assert q['code_challenge_method'] == 'S256' and len(q['code_challenge']) == 43 and 'code_verifier' not in q
        assert len(q['state']) >= 32 and len(q['nonce']) >= 16 and set(q['scope'].split()) == set(SCOPE.split())
        # What the provider sent back: a code, our state, and its issuer (RFC 9207)
        assert cb.startswith(op.redirect_uri + '?')
        c = query(cb)
        assert c['state'] == q['state'] and c['iss'] == op.issuer and c['code']

        res = b.get(cb)
        assert (res.status_code, res.headers['location']) == (303, '/')
        page = b.get(site.url + '/')
        assert page.status_code == 200
        sub = expected_sub('ada@example.com')
        assert '<p id="email">ada@example.com</p>' in page.text and f'<p id="sub">{sub}</p>' in page.text
        assert '<p id="name">Ada</p>' in page.text

        # The login's Token, as get_auth received it
        tok = app.tokens[sub]
        assert isinstance(tok, Token) and tok.access_token and tok.refresh_token and tok.id_token and not tok.expired
        assert 'offline_access' in tok.scope.split() and tok.token_type.lower() == 'bearer'
        info = run(cli.get_info_async(tok))
        assert (info.sub, info.email, info.email_verified, info.name) == (sub, 'ada@example.com', True, 'Ada')

        # Refresh: a new access token that works
        new = run(cli.refresh_async(tok))
        assert isinstance(new, Token) and new.access_token != tok.access_token and new.refresh_token
        assert run(cli.get_info_async(new)).sub == sub

        # Revoke the access token: user info now refuses it, while the refresh token still works
        assert run(cli.revoke_async(new)) is True
        with pytest.raises(UserInfoError) as e: run(cli.get_info_async(new))
        assert e.value.error == 'invalid_token' and '401' in str(e.value)
        newer = run(cli.refresh_async(new))
        assert run(cli.get_info_async(newer)).email == 'ada@example.com'

        # Revoke the refresh token: no more refreshing, and (the provider revokes the grant) no more user info
        assert run(cli.revoke_async(newer, 'refresh_token')) is True
        with pytest.raises(ProviderError) as e: run(cli.refresh_async(newer))
        assert e.value.error == 'invalid_grant'
        with pytest.raises(UserInfoError): run(cli.get_info_async(newer))

        # Log out
        res = b.post(site.url + '/logout')
        assert (res.status_code, res.headers['location']) == (303, '/login')
        assert b.get(site.url + '/').headers['location'] == '/login'

def test_client_secret_basic_and_sync_calls(op, serve):
    "The provider's other client authenticates with client_secret_basic (the secret has a space, `:`, `+`, `/`, `&`, `=`, `%`); the sync twins"
    cli = OIDCAppClient(op.basic_client_id, op.client_secret, issuer=op.issuer, token_auth='client_secret_basic', timeout=5)
    app = make_app(cli)
    site = serve(app, port=op.app_port)
    with browser() as b:
        _, cb = login_to_callback(b, op, site.url, 'grace')
        assert b.get(cb).headers['location'] == '/'
        assert '<p id="email">grace@example.test</p>' in b.get(site.url + '/').text
    tok = app.tokens[expected_sub('grace')]
    new = cli.refresh(tok)
    assert cli.get_info(new).email == 'grace@example.test'
    assert cli.revoke(new, 'refresh_token') is True
    with pytest.raises(ProviderError) as e: cli.refresh(new)
    assert e.value.error == 'invalid_grant'

def test_wrong_client_secret_reaches_error_page(op, serve):
    cli = OIDCAppClient(op.client_id, 'not-the-secret', issuer=op.issuer, timeout=5)
    site = serve(make_app(cli), port=op.app_port)
    with browser() as b:
        _, cb = login_to_callback(b, op, site.url)
        msg = ends_at_error(b, site.url, b.get(cb))
    assert 'The provider refused the token request: invalid_client' in msg

def test_user_cancels_at_provider(op, cli, serve):
    site = serve(make_app(cli), port=op.app_port)
    with browser() as b:
        res = provider_login(b, start_login(b, site.url), op.issuer, cancel=True)
        assert res.is_redirect and res.headers['location'].startswith(op.redirect_uri + '?')
        assert query(res.headers['location'])['error'] == 'access_denied'
        msg = ends_at_error(b, site.url, b.get(res.headers['location']))
        assert msg == 'The provider refused the login: access_denied (End-User aborted interaction)'
        assert b.get(site.url + '/').headers['location'] == '/login'

def test_code_replayed(op, cli, serve):
    "The same code twice: the app refuses the second callback itself; with the pending login restored, the provider refuses it"
    app = make_app(cli)
    site = serve(app, port=op.app_port)
    with browser() as b:
        _, cb = login_to_callback(b, op, site.url)
        pending = b.cookies.get('session_')  # the app's session while the login is pending
        assert b.get(cb).headers['location'] == '/'
        tok = app.tokens[sub := expected_sub('ada@example.com')]
        assert run(cli.get_info_async(tok)).sub == sub
        # Same browser: that login is used up, so the app refuses before asking the provider
        assert 'already used' in ends_at_error(b, site.url, b.get(cb))
    # A fresh browser holding the session as it was before the callback: the app accepts the state and the provider
    # refuses the code
    with httpx.Client(follow_redirects=False, timeout=10, cookies={'session_': pending}) as b2:
        msg = ends_at_error(b2, site.url, b2.get(cb))
        assert msg.startswith('The provider refused the token request: invalid_grant')
        assert b2.get(site.url + '/').headers['location'] == '/login'
    # The provider treats a replayed code as an attack (RFC 6749 §4.1.2): the tokens issued for it are revoked
    with pytest.raises(UserInfoError): run(cli.get_info_async(tok))

def test_code_exchanged_twice_by_client(op, cli):
    lr, code, iss = client_login(cli, op)
    tok, info = run(cli.finish_login_async(lr, code, iss))
    assert info.email == 'ada@example.com' and info.sub == expected_sub('ada@example.com')
    with pytest.raises(ProviderError) as e: run(cli.finish_login_async(lr, code, iss))
    assert e.value.error == 'invalid_grant'

def test_wrong_pkce_verifier(op, cli):
    lr, code, iss = client_login(cli, op)
    for bad in (secrets.token_urlsafe(48), None):  # another verifier, and none at all
        with pytest.raises(ProviderError) as e: run(cli.finish_login_async(dataclasses.replace(lr, code_verifier=bad), code, iss))
        assert e.value.error == 'invalid_grant'
        assert 'refused the token request: invalid_grant' in str(e.value)
    # The provider refused the verifier, not a spent code: the right one still works
    tok, info = run(cli.finish_login_async(lr, code, iss))
    assert info.email == 'ada@example.com' and tok.refresh_token

def test_redirect_uri_not_registered(op, cli, serve):
    "An app whose callback is not the registered one: the provider shows its own error page and sends the browser nowhere"
    site = serve(make_app(cli, redir_path='/callback'), port=op.app_port)
    with browser() as b:
        auth_url = start_login(b, site.url)
        assert query(auth_url)['redirect_uri'] == site.url + '/callback'
        res = b.get(auth_url)
        assert res.status_code == 400 and 'location' not in res.headers
        assert 'redirect_uri did not match any of the client' in unescape(res.text)

def test_redirect_uri_changed_at_exchange(op, cli):
    "A code issued for the registered callback, exchanged with another redirect_uri: refused"
    lr, code, iss = client_login(cli, op)
    with pytest.raises(ProviderError) as e: run(cli.parse_response_async(code, op.app_url + '/callback', lr.code_verifier))
    assert e.value.error == 'invalid_grant'
    with pytest.raises(ProviderError) as e: run(cli.finish_login_async(dataclasses.replace(lr, redirect_uri=op.app_url + '/other'), code, iss))
    assert e.value.error == 'invalid_grant'

@pytest.mark.parametrize('iss, expect', [('http://localhost:1', "comes from issuer 'http://localhost:1'"),
                                         (None, 'does not say which provider sent it')])
def test_callback_iss_checked(op, cli, serve, iss, expect):
    "RFC 9207: the real provider advertises and sends `iss`; a callback with another one, or none, logs nobody in"
    site = serve(make_app(cli), port=op.app_port)
    with browser() as b:
        _, cb = login_to_callback(b, op, site.url)
        msg = ends_at_error(b, site.url, b.get(with_query(cb, iss=iss)))
        assert expect in msg
        assert b.get(site.url + '/').headers['location'] == '/login'

def test_form_post_callback(op, cli, serve):
    "response_mode=form_post: the provider's page POSTs code, state and iss to the app's POST callback"
    site = serve(make_app(cli, redir_method='post', response_mode='form_post'), port=op.app_port)
    with browser() as b:
        auth_url = start_login(b, site.url)
        assert query(auth_url)['response_mode'] == 'form_post'
        page = provider_login(b, auth_url, op.issuer)
        assert page.status_code == 200 and 'Submitting Callback' in page.text
        action = unescape(re.search(r'<form method="post" action="([^"]+)"', page.text)[1])
        fields = {unescape(k): unescape(v) for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text)}
        assert action == op.redirect_uri and set(fields) == {'code', 'state', 'iss'}
        res = b.post(action, data=fields)
        assert (res.status_code, res.headers['location']) == (303, '/')
        assert '<p id="email">ada@example.com</p>' in b.get(site.url + '/').text

def test_offline_access_dropped_without_consent_prompt(op, cli, serve):
    "Without prompt=consent the provider grants less than asked (no offline_access, so no refresh token): the login still works"
    app = make_app(cli, prompt=None)
    site = serve(app, port=op.app_port)
    with browser() as b:
        auth_url, cb = login_to_callback(b, op, site.url)
        assert 'prompt' not in query(auth_url) and 'offline_access' in query(auth_url)['scope'].split()
        assert b.get(cb).headers['location'] == '/'
    tok = app.tokens[expected_sub('ada@example.com')]
    assert tok.access_token and tok.refresh_token is None and 'offline_access' not in tok.scope.split()
    assert abs(tok.expires_at - time.time() - tok.expires_in) < 30

def test_two_logins_in_one_browser_finish_in_any_order(op, cli, serve):
    "Two tabs start a login each; the provider signs the user in once; both callbacks work, the later-started one first"
    app = make_app(cli)
    site = serve(app, port=op.app_port)
    with browser() as b:
        first, second = start_login(b, site.url), start_login(b, site.url)
        cb1 = provider_login(b, first, op.issuer, 'ada@example.com').headers['location']
        cb2 = provider_login(b, second, op.issuer, 'not used: the provider remembers ada').headers['location']
        assert query(cb1)['state'] == query(first)['state'] and query(cb2)['state'] == query(second)['state']
        for cb in (cb2, cb1):
            assert b.get(cb).headers['location'] == '/'
            assert '<p id="email">ada@example.com</p>' in b.get(site.url + '/').text

def test_provider_gone_at_callback(op, cli, serve):
    "A second provider that stops after the user consented: the callback cannot reach it, and says so on the error page"
    op2 = start_provider([op.redirect_uri], app_port=op.app_port, name='oidc-provider-stopped')
    try:
        cli2 = OIDCAppClient(op2.client_id, op2.client_secret, issuer=op2.issuer, timeout=3)
        site = serve(make_app(cli2), port=op2.app_port)
        with browser() as b:
            _, cb = login_to_callback(b, op2, site.url)
            stop_provider(op2.proc)
            msg = ends_at_error(b, site.url, b.get(cb))
            assert msg == f'Could not reach the provider at {urlsplit(op2.issuer).netloc}'
    finally: stop_provider(op2.proc)

def test_logout_at_the_provider_rp_initiated(op, cli, serve):
    "With `provider_logout=True`, logout ends the login here and the session at the provider, and comes back with its state"
    app = make_app(cli, oauth_kw=dict(provider_logout=True))
    serve(app, port=op.app_port)
    with browser() as b:
        _, callback = login_to_callback(b, op, op.app_url)
        assert b.get(callback).headers['location'] == '/'
        copy = httpx.Client(follow_redirects=False, timeout=10, cookies={'session_': b.cookies.get('session_', domain='127.0.0.1')})
        res = b.post(op.app_url + '/logout')
        to_op = res.headers['location']
        q = query(to_op)
        assert to_op.startswith(op.issuer + '/session/end?') and q['post_logout_redirect_uri'] == op.app_url + '/logout/done'
        assert q['id_token_hint'].count('.') == 2 and q['state'] and q['client_id'] == op.client_id
        assert copy.get(op.app_url + '/').headers['location'] == '/login'  # ended here before the provider is asked
        back = provider_logout(b, to_op, op.issuer)
        assert back.headers['location'] == f"{op.app_url}/logout/done?state={q['state']}", back.headers
        assert b.get(back.headers['location']).headers['location'] == '/login'
        # The provider's session is gone too: the next login asks the user to sign in again
        auth_url = start_login(b, op.app_url)
        page = b.get(auth_url, follow_redirects=True)
        assert 'name="login"' in page.text, page.text[:300]
        copy.close()

def test_logout_at_the_provider_reaches_the_app_by_back_channel(op, cli, serve):
    "The user logs out at the provider itself: the provider POSTs a logout token, and the app's cookie stops working"
    app = make_app(cli)
    serve(app, port=op.app_port)
    with browser() as b:
        _, callback = login_to_callback(b, op, op.app_url)
        assert b.get(callback).headers['location'] == '/'
        assert b.get(op.app_url + '/').status_code == 200
        res = provider_logout(b, op.issuer + '/session/end', op.issuer)  # no id_token_hint: the provider's own logout page
        assert res.status_code in (200, 303), res.status_code
        for _ in range(50):  # the provider sends the logout token while it answers; allow it a moment
            if b.get(op.app_url + '/').status_code == 303: break
            time.sleep(0.1)
        assert b.get(op.app_url + '/').headers['location'] == '/login'
