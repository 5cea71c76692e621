"""The tools' logins (`fasthtml_oauth.tools`) against the real `oidc-provider` (npm, OpenID Certified), with a real
headless Chromium as the user's browser: the device flow (RFC 8628), where the user types the code into the provider's
own page, approves, or aborts, or lets the code expire; the loopback login (RFC 8252), where Chromium is the "system
browser" sent to the provider and back to the tool's one-shot server on 127.0.0.1; and `cached_login`, which logs in
once and then asks nothing of the user.

The logins block (their sync forms are what a script calls), so each runs in a thread of its own while the test drives
Chromium from its own thread, as Playwright's sync API wants: `show` and `open_browser` hand the test what a tool would
show the user."""
import asyncio, base64, json, queue, re, socket, threading, time
from urllib.parse import parse_qsl, urlsplit
import httpx, pytest
from playwright.sync_api import expect
from fasthtml_oauth import OIDCAppClient, ProviderError, TokenCache
from fasthtml_oauth.core import IdTokenError
from oidc_fixture import SCOPE, expected_sub, start_provider, stop_provider
from test_browser import chromium, tab, sign_in_at_provider  # noqa: F401 (fixtures)

NATIVE_ID = 'fasthtml-tool'  # server.js's public native client (no secret, loopback redirect URIs on any port)
DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code'

def provider(**kw):
    "A provider of our own (the session's has no device flow), stopped when the generator is closed"
    op = start_provider(['http://127.0.0.1:9/redirect'], device_flow=True, native_client_id=NATIVE_ID, **kw)
    try: yield op
    finally:
        stop_provider(op.proc)
        if op.proc.stdin: op.proc.stdin.close()

@pytest.fixture(scope='module')
def op():
    "Device answers that say to poll every second (oidc-provider's own say nothing, which means every 5 s)"
    yield from provider(name='oidc-provider-tools', device_interval=1)

@pytest.fixture
def cli(op):
    "The confidential static client, as a web app would have it"
    c = OIDCAppClient(op.client_id, op.client_secret, issuer=op.issuer, timeout=5)
    yield c
    c.close()

@pytest.fixture
def tool(op):
    "The public native client, as a command-line tool would have it; a public client sends its id in the form"
    c = OIDCAppClient(NATIVE_ID, '', issuer=op.issuer, timeout=5, token_auth='client_secret_post')
    yield c
    c.close()

class Login:
    """Run the blocking login `start(hand)` in a daemon thread; `hand` is its `show` or `open_browser`: what it
    hands the user comes out of `handed()`, and `result()` is the login's own result or error"""
    def __init__(self, start):
        self.q, self.out = queue.Queue(), {}
        self.thread = threading.Thread(target=self._run, args=(start,), daemon=True)
        self.thread.start()

    def _run(self, start):
        try: self.out['value'] = start(self.q.put)
        except BaseException as e: self.out['error'] = e

    def handed(self, timeout=10):
        "What the login showed the user; if it ended first, its error"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try: return self.q.get(timeout=0.05)
            except queue.Empty:
                if not self.thread.is_alive(): return self.result()
        raise AssertionError(f"the login showed nothing within {timeout} s")

    def result(self, timeout=15):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the login did not end within {timeout} s"
        if 'error' in self.out: raise self.out['error']
        return self.out['value']

def in_loop(cli, coro):
    "Run `coro`, one of `cli`'s coroutines, on an event loop of its own, closing the connections `cli` opened there"
    async def main():
        try: return await coro
        finally: await cli.aclose()
    return asyncio.run(main())

def log_lines(op, after:int=0) -> list:
    "The provider's log lines about device-code token requests, from line `after` on"
    return [l for l in op.log_text().splitlines()[after:] if DEVICE_GRANT in l]

def log_len(op) -> int: return len(op.log_text().splitlines())

def wait_for_log(op, text:str, after:int, timeout:float=10):
    "Wait until the provider logs a device-code token request line containing `text`"
    deadline = time.monotonic() + timeout
    while not any(text in l for l in log_lines(op, after)):
        assert time.monotonic() < deadline, f"the provider never logged {text!r}:\n{op.log_text()[-2000:]}"
        time.sleep(0.05)

def claims(jwt:str) -> dict:
    "The (unverified) payload of `jwt`, to compare with what the library verified"
    part = jwt.split('.')[1]
    return json.loads(base64.urlsafe_b64decode(part + '=' * (-len(part) % 4)))

def enter_code(page, op, d, login='ada@example.com', then='approve'):
    """In Chromium, as the user: open the provider's device page, type the code, confirm it is the one the tool shows,
    and sign in as `login` and consent (`then='approve'`), press Abort on the confirmation page (`'abort'`), or
    Cancel on the sign-in page (`'cancel'`)"""
    page.goto(d.verification_uri)
    expect(page.locator('h1')).to_have_text('Sign-in')
    expect(page.locator('p').first).to_have_text('Enter the code displayed on your device')
    page.fill('input[name=user_code]', d.user_code)
    page.click('button[type=submit]')
    expect(page.locator('h1')).to_have_text('Confirm Device')
    expect(page.locator('code')).to_have_text(d.user_code)  # the code the tool showed
    if then == 'abort': page.click('button[name=abort]')
    else:
        page.click('button[autofocus]')  # Continue
        if then == 'cancel':
            page.wait_for_url(f'{op.issuer}/interaction/**')
            page.click('text=[ Cancel ]')
        else: sign_in_at_provider(page, op, login)
    if then == 'approve':
        expect(page.locator('h1')).to_have_text('Sign-in Success')
        expect(page.locator('p')).to_contain_text('was successful, you can now close this page')
    else:  # the provider takes the user back to its code page, and tells the tool access_denied
        expect(page.locator('p.red')).to_have_text('The Sign-in request was interrupted')

def test_device_login_in_chromium(op, cli, tab):
    "The tool shows a code; the user types it into the provider's page in Chromium and approves: token, verified user"
    start = log_len(op)
    login = Login(lambda show: cli.device_login(SCOPE, show=show))
    d = login.handed()
    # The device endpoint came from discovery; the answer's fields are the provider's, checked
    assert cli.device_url == cli.meta['device_authorization_endpoint'] == op.issuer + '/device/auth'
    assert d.verification_uri == op.issuer + '/device' and re.fullmatch(r'[B-Z]{4}-[B-Z]{4}', d.user_code)
    assert d.verification_uri_complete == f'{op.issuer}/device?user_code={d.user_code}'
    assert (d.interval, 0 < d.expires_in <= 600) == (1, True)
    # The tool polls while the user has not approved, and hears authorization_pending
    wait_for_log(op, 'authorization_pending', start)
    enter_code(tab.page, op, d)
    tok, info = login.result()
    assert tok.token_type == 'Bearer' and tok.access_token and tok.id_token
    assert set(tok.scope.split()) == set(SCOPE.split()) and tok.refresh_token  # the device flow needs no prompt=consent
    assert (info.sub, info.ident, info.email, info.email_verified, info.name) == (
        expected_sub('ada@example.com'), expected_sub('ada@example.com'), 'ada@example.com', True, 'Ada')
    # The info is the verified id_token's claims (completed by user info): its issuer, audience and subject
    c = claims(tok.id_token)
    assert (info['iss'], info['aud'], info['sub']) == (op.issuer, op.client_id, c['sub']) and info['exp'] == c['exp']
    # One successful token request for the code, after at least one pending
    lines = log_lines(op, start)
    assert sum('grant.success' in l for l in lines) == 1 and 'authorization_pending' in lines[0], lines
    # The access token works at the provider
    assert cli.get_info(tok).sub == info.sub

def test_device_login_id_token_is_verified(op, cli, tab):
    "An id_token whose signature does not match is refused inside the device login, after the user approved"
    def forged(res, token_from=cli.token_from):
        tok = token_from(res)
        head, body, sig = tok['id_token'].split('.')
        tok['id_token'] = f"{head}.{body}.{('A' if sig[0] != 'A' else 'B') + sig[1:]}"
        return tok
    cli.token_from = forged  # the instance's own, used by the flow
    login = Login(lambda show: cli.device_login(SCOPE, show=show))
    enter_code(tab.page, op, login.handed())
    with pytest.raises(IdTokenError, match='signature'): login.result()

@pytest.mark.parametrize('then', ['abort', 'cancel'])
def test_device_login_denied_in_chromium(op, cli, tab, then):
    """The user aborts on the provider's confirmation page, or cancels its sign-in: the tool's login ends with
    access_denied. This one is the async twin, on an event loop of the login's own"""
    start = log_len(op)
    login = Login(lambda show: in_loop(cli, cli.device_login_async(SCOPE, show=show)))
    enter_code(tab.page, op, login.handed(), then=then)
    with pytest.raises(ProviderError) as e: login.result()
    assert e.value.error == 'access_denied' and 'End-User aborted interaction' in str(e.value)
    assert 'access_denied' in log_lines(op, start)[-1]

def test_device_code_expires():
    "Nobody enters the code: the login ends with expired_token when the code's lifetime is over, as the provider says"
    gen = provider(name='oidc-provider-tools-expiry', device_interval=1, device_code_ttl=2)
    op = next(gen)
    cli = OIDCAppClient(op.client_id, op.client_secret, issuer=op.issuer, timeout=5)
    try:
        login = Login(lambda show: cli.device_login('openid', show=show))
        d = login.handed()
        assert d.expires_in <= 2
        t0 = time.monotonic()
        with pytest.raises(ProviderError) as e: login.result()
        assert e.value.error == 'expired_token' and time.monotonic() - t0 < 8
        # The provider says the same of that code now (the library may have noticed the deadline first)
        with httpx.Client(timeout=5) as h:
            res = h.send(cli.token_request(DEVICE_GRANT, device_code=d.device_code))
        with pytest.raises(ProviderError) as e: cli.token_from(res)
        assert e.value.error == 'expired_token'
    finally:
        cli.close()
        gen.close()

def refused(url:str) -> bool:
    "Does nothing listen at the host and port of `url` (the redirect URI of a loopback login)?"
    u = urlsplit(url)
    with socket.socket(socket.AF_INET6 if ':' in u.hostname else socket.AF_INET) as s:
        s.settimeout(2)
        return s.connect_ex((u.hostname, u.port)) != 0

def test_loopback_login_in_chromium(op, tool, tab):
    "Chromium, as the system browser, signs in at the provider and lands on the tool's one-shot server, which stops"
    page = tab.page
    login = Login(lambda open_browser: tool.loopback_login(SCOPE, open_browser=open_browser, timeout=20,
                                                            prompt='consent'))
    url = login.handed()
    q = dict(parse_qsl(urlsplit(url).query))
    assert url.startswith(op.issuer + '/auth?') and q['client_id'] == NATIVE_ID
    assert (q['code_challenge_method'], q['scope']) == ('S256', SCOPE) and q['state'] and q['nonce']
    cb = q['redirect_uri']
    # A port of the tool's choosing, registered without one: oidc-provider matches native clients' loopback URIs on any
    assert re.fullmatch(r'http://127\.0\.0\.1:\d+/callback', cb), cb
    assert not refused(cb)  # the one-shot server listens while the browser is away...
    with httpx.Client(timeout=5) as h:  # ...and turns away what does not carry this login's state
        assert h.get(cb, params=dict(code='forged', state='forged')).status_code == 400
        assert h.get(cb.replace('/callback', '/other'), params=dict(state=q['state'])).status_code == 404
    page.goto(url)
    sign_in_at_provider(page, op, 'ada@example.com')
    page.wait_for_url(f"{cb}?**")
    expect(page.locator('h1')).to_have_text('Logged in')
    expect(page.locator('p')).to_have_text('You are logged in: you can close this tab and go back.')
    back = dict(parse_qsl(urlsplit(page.url).query))
    assert (back['state'], back['iss']) == (q['state'], op.issuer) and back['code']
    tok, info = login.result()
    assert tok.token_type == 'Bearer' and tok.access_token and tok.id_token and tok.refresh_token
    assert set(tok.scope.split()) == set(SCOPE.split())
    assert (info.sub, info.email, info.name) == (expected_sub('ada@example.com'), 'ada@example.com', 'Ada')
    assert (info['iss'], info['aud'], info['nonce']) == (op.issuer, NATIVE_ID, q['nonce'])  # the verified id_token's
    assert refused(cb)  # the server is gone
    assert tool.refresh(tok).access_token  # a public client refreshes with its id alone

def test_loopback_login_cancelled_in_chromium(op, tool, tab):
    "The user cancels at the provider: Chromium lands on the tool's 'Login failed' page, the login ends access_denied"
    page = tab.page
    login = Login(lambda open_browser: tool.loopback_login('openid', open_browser=open_browser, timeout=20))
    url = login.handed()
    cb = dict(parse_qsl(urlsplit(url).query))['redirect_uri']
    page.goto(url)
    page.wait_for_url(f'{op.issuer}/interaction/**')
    page.click('text=[ Cancel ]')
    page.wait_for_url(f'{cb}?**')
    expect(page.locator('h1')).to_have_text('Login failed')
    with pytest.raises(ProviderError) as e: login.result()
    assert e.value.error == 'access_denied'
    assert refused(cb)

def test_cached_login_by_device_flow(op, tool, tab, tmp_path):
    """A tool's first run logs in by the device flow (the user follows the link with the code in it); its second asks
    nobody; once the token has expired, the next run refreshes it at the provider, still asking nobody"""
    cache = TokenCache('tool', path=tmp_path/'tool.json')
    start = log_len(op)
    login = Login(lambda show: tool.cached_login(cache, SCOPE, how='device', show=show))
    d = login.handed()
    page = tab.page
    page.goto(d.verification_uri_complete)  # the code comes filled in: the user only confirms it
    expect(page.locator('h1')).to_have_text('Confirm Device')
    expect(page.locator('code')).to_have_text(d.user_code)
    page.click('button[autofocus]')
    sign_in_at_provider(page, op, 'grace@example.org')
    expect(page.locator('h1')).to_have_text('Sign-in Success')
    tok, info = login.result()
    assert (info.email, info.sub) == ('grace@example.org', expected_sub('grace@example.org')) and tok.refresh_token
    assert oct(cache.path.stat().st_mode & 0o777) == '0o600'
    def nobody(d): raise AssertionError(f"the cached login asked the user again: {d}")
    seen = log_len(op)
    again, info2 = tool.cached_login(cache, SCOPE, how='device', show=nobody)
    assert (again.access_token, info2) == (tok.access_token, info)
    assert log_len(op) == seen  # no token request reached the provider
    assert tool.get_info(again).email == 'grace@example.org'  # the cached token works there
    (key,) = cache._entries()  # the one client's entry: make its token look expired
    cache.save(key, dict(tok, expires_at=time.time() - 1), info)
    seen = log_len(op)
    renewed, info3 = tool.cached_login(cache, SCOPE, how='device', show=nobody)
    assert renewed.access_token != tok.access_token and info3 == info
    grants = [l for l in op.log_text().splitlines()[seen:] if 'grant.' in l]
    assert grants == ['oidc-provider grant.success refresh_token']
    assert cache.load(key)[0].access_token == renewed.access_token and renewed.refresh_token
    assert tool.get_info(renewed).sub == info.sub
    assert sum('grant.success' in l for l in log_lines(op, start)) == 1  # one device code redeemed, in all
