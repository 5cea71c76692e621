"""The login in a real headless Chromium (Debian's, driven by Playwright): click "Log in" on a FastHTML app using `OAuth`,
sign in and consent on the real `oidc-provider`'s pages, land back signed in; cancel at the provider and land on the
app's error page; and a form_post login, where the browser withholds the app's SameSite=Lax cookie from the provider's
cross-site POST. The provider runs at `localhost`, the app at `127.0.0.1`: two sites, as in real life."""
from pathlib import Path
from urllib.parse import urlsplit
import pytest
from playwright.sync_api import sync_playwright, expect
from fasthtml_oauth import OIDCAppClient
from oidc_fixture import artifacts, expected_sub, make_app

CHROMIUM = '/usr/bin/chromium'
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--no-first-run']

@pytest.fixture(scope='module')
def chromium():
    if not Path(CHROMIUM).exists(): pytest.fail(f"{CHROMIUM} is missing: run `bash tests/setup.sh` (it installs Debian's chromium)", pytrace=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()

class Tab:
    "A fresh browser profile with one page; requests to other hosts than loopback are blocked and recorded, as are 5xx answers"
    def __init__(self, browser):
        self.context = browser.new_context()
        self.blocked, self.server_errors, self.requests = [], [], []
        self.context.route('**/*', self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.page.on('request', lambda r: self.requests.append((r.method, r.url, r.post_data)))
        self.page.on('response', lambda r: r.status >= 500 and self.server_errors.append((r.status, r.url)))

    def _route(self, route):
        if urlsplit(route.request.url).hostname in ('localhost', '127.0.0.1'): route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def __enter__(self): return self
    def __exit__(self, *exc): self.context.close()

@pytest.fixture
def tab(chromium):
    with Tab(chromium) as t:
        yield t
        assert not t.server_errors, f"5xx answers: {t.server_errors}"
        # Only the provider's dev pages reach out (a Google Fonts @import); the app loads nothing from other sites
        assert all(urlsplit(u).hostname == 'fonts.googleapis.com' for u in t.blocked), t.blocked

def sign_in_at_provider(page, op, login):
    "On the provider's devInteractions pages: sign in as `login`, then consent"
    page.wait_for_url(f'{op.issuer}/interaction/**')
    expect(page.locator('h1')).to_have_text('Sign-in')
    page.fill('input[name=login]', login)
    page.fill('input[name=password]', 'any password')
    page.click('button[type=submit]')
    expect(page.locator('h1')).to_have_text('Authorize')
    assert page.url.startswith(op.issuer + '/interaction/')
    page.click('button:has-text("Continue")')

@pytest.fixture
def cli(oidc_provider):
    op = oidc_provider
    return OIDCAppClient(op.client_id, op.client_secret, issuer=op.issuer, timeout=5)

def test_login_in_chromium(oidc_provider, cli, serve, tab):
    op, page = oidc_provider, tab.page
    site = serve(make_app(cli), port=op.app_port)
    page.goto(site.url + '/page?x=1')  # a gated page: after the login the browser comes back to it
    assert page.url == site.url + '/login'
    page.click('#login')
    sign_in_at_provider(page, op, 'ada@example.com')
    page.wait_for_url(site.url + '/page?x=1')
    assert page.locator('#page').inner_text() == 'page 1'
    page.goto(site.url + '/')
    assert page.locator('#email').inner_text() == 'ada@example.com'
    assert page.locator('#sub').inner_text() == expected_sub('ada@example.com')
    assert page.locator('#name').inner_text() == 'Ada'
    assert tab.blocked  # the provider's pages did try to load their web font: the blocking works
    shot = artifacts/'browser-logged-in.png'
    shot.unlink(missing_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.exists() and shot.stat().st_size > 0
    # The callback the browser followed carried the provider's iss (RFC 9207) and no error
    cb = [u for m, u, _ in tab.requests if u.startswith(op.redirect_uri + '?')]
    assert len(cb) == 1 and 'code=' in cb[0] and 'iss=' in cb[0]
    page.click('#logout')
    page.wait_for_url(site.url + '/login')
    page.goto(site.url + '/')
    assert page.url == site.url + '/login'

def test_cancel_at_provider_in_chromium(oidc_provider, cli, serve, tab):
    op, page = oidc_provider, tab.page
    site = serve(make_app(cli), port=op.app_port)
    page.goto(site.url + '/login')
    page.click('#login')
    page.wait_for_url(f'{op.issuer}/interaction/**')
    page.click('text=[ Cancel ]')
    page.wait_for_url(site.url + '/error')
    assert page.locator('#error').inner_text() == 'The provider refused the login: access_denied (End-User aborted interaction)'
    page.goto(site.url + '/')
    assert page.url == site.url + '/login'

def test_form_post_login_in_chromium(oidc_provider, cli, serve, tab):
    "The provider's page POSTs the callback cross-site; Chromium sends no SameSite=Lax session cookie with it, so the app has it re-posted"
    op, page = oidc_provider, tab.page
    site = serve(make_app(cli, redir_method='post', response_mode='form_post'), port=op.app_port)
    page.goto(site.url + '/login')
    page.click('#login')
    sign_in_at_provider(page, op, 'grace@example.org')
    page.wait_for_url(site.url + '/')
    assert page.locator('#email').inner_text() == 'grace@example.org'
    posts = [data for m, u, data in tab.requests if m == 'POST' and u == op.redirect_uri]
    assert len(posts) == 2 and '_oauth_resubmit' not in posts[0] and '_oauth_resubmit=1' in posts[1]

def test_logout_at_provider_in_chromium(oidc_provider, cli, serve, tab):
    "Logged in to the app, the user logs out at the provider's own page: the provider tells the app (back-channel), whose pages then ask for a login"
    op, page = oidc_provider, tab.page
    site = serve(make_app(cli), port=op.app_port)
    page.goto(site.url + '/login')
    page.click('#login')
    sign_in_at_provider(page, op, 'ada@example.com')
    page.wait_for_url(site.url + '/')
    page.goto(op.issuer + '/session/end')  # the provider's logout page, not the app's
    page.click('button[value=yes]')
    page.wait_for_url(f'{op.issuer}/session/end/success**')
    page.screenshot(path=str(artifacts/'browser-provider-logged-out.png'))
    page.goto(site.url + '/')
    assert page.url == site.url + '/login'

def test_provider_logout_from_the_app_in_chromium(oidc_provider, cli, serve, tab):
    "With provider_logout=True, the app's Log out button ends the login here and at the provider, and comes back to the app"
    op, page = oidc_provider, tab.page
    site = serve(make_app(cli, oauth_kw=dict(provider_logout=True)), port=op.app_port)
    page.goto(site.url + '/login')
    page.click('#login')
    sign_in_at_provider(page, op, 'ada@example.com')
    page.wait_for_url(site.url + '/')
    page.click('#logout')
    page.wait_for_url(f'{op.issuer}/session/end**')
    page.click('button[value=yes]')
    page.wait_for_url(site.url + '/login')
    page.click('#login')  # the provider forgot the user too: it asks them to sign in again
    page.wait_for_url(f'{op.issuer}/interaction/**')
    expect(page.locator('h1')).to_have_text('Sign-in')
