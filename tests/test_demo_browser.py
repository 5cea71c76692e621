"The demo app in real headless Chromium, on a desktop and a phone: log in through the embedded DevProvider, count to 2, log out"
from pathlib import Path
import pytest
from playwright.sync_api import sync_playwright
from fasthtml_oauth.demo import make_app
from conftest import free_port

ARTIFACTS = Path(__file__).parent/'artifacts'/'demo'
CHROMIUM = dict(executable_path='/usr/bin/chromium', args=['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                '--disable-component-update', '--disable-sync', '--no-first-run'])
SCREENS = dict(desktop=dict(viewport=dict(width=1280, height=800)),
               phone=dict(viewport=dict(width=390, height=844), device_scale_factor=2, is_mobile=True, has_touch=True))

_look = """() => {
  const s = e => e && getComputedStyle(e);
  const main = document.querySelector('main'), btn = document.querySelector('main .login-button, main .button, main button');
  return {styled: [...document.styleSheets].some(x => x.href && x.href.endsWith('/demo.css') && x.cssRules.length > 0),
          font: s(document.body).fontFamily, mainWidth: main && main.getBoundingClientRect().width,
          btnBg: s(btn)?.backgroundColor, btnHeight: btn && btn.getBoundingClientRect().height,
          overflowX: document.documentElement.scrollWidth > window.innerWidth,
          viewport: document.querySelector('meta[name=viewport]')?.content}
}"""

def looks_finished(page, width:int, what:str):
    "The page has its stylesheet, a styled button big enough to tap, and nothing wider than the screen"
    v = page.evaluate(_look)
    assert v['viewport'] == 'width=device-width, initial-scale=1', (what, v)
    assert not v['overflowX'], (what, 'wider than the screen', v)
    assert v['btnBg'] not in (None, 'rgba(0, 0, 0, 0)', 'rgb(239, 239, 239)'), (what, 'unstyled button', v)
    assert v['btnHeight'] >= 36, (what, 'button too small to tap', v)
    assert v['mainWidth'] <= width, (what, v)
    return v

@pytest.mark.parametrize('screen', list(SCREENS))
def test_demo_login_count_logout(serve, screen):
    port = free_port()
    base = f'http://localhost:{port}'
    demo, _ = make_app(base)
    serve(demo, port=port)
    (shots := ARTIFACTS/screen).mkdir(parents=True, exist_ok=True)
    external, failed = [], []
    width = SCREENS[screen]['viewport']['width']
    with sync_playwright() as pw:
        browser = pw.chromium.launch(**CHROMIUM)
        try:
            page = browser.new_page(**SCREENS[screen])
            page.on('request', lambda r: r.url.startswith(base) or external.append(r.url))
            page.on('response', lambda r: r.status >= 400 and failed.append((r.status, r.url)))
            page.goto(base + '/')
            assert page.url == base + '/login'
            v = looks_finished(page, width, 'login page')
            assert v['styled'], v
            page.screenshot(path=str(shots/'1-login.png'), full_page=True)
            page.click('text=Log in with the DevProvider')
            assert page.inner_text('header').split() == 'Development provider. Anyone can sign in as anyone; never use it in production.'.split()
            looks_finished(page, width, 'provider page')
            page.fill('input[name=email]', 'ada@example.com')
            page.fill('input[name=name]', 'Ada Lovelace')
            page.screenshot(path=str(shots/'2-provider.png'), full_page=True)
            page.click('button:has-text("Sign in")')
            page.wait_for_url(base + '/')
            looks_finished(page, width, 'counter page')
            assert page.inner_text('#count') == '0'
            page.click('text=Increment'); page.wait_for_function("document.querySelector('#count').innerText == '1'")
            page.click('text=Increment'); page.wait_for_function("document.querySelector('#count').innerText == '2'")
            assert 'Ada Lovelace' in page.content()
            page.screenshot(path=str(shots/'3-logged-in.png'), full_page=True)
            # The provider's API, called with the user's kept token; the items need one more scope, asked for on the way
            page.click("text=Call the provider's API for you")
            page.wait_for_url(base + '/profile')
            looks_finished(page, width, 'profile page')
            assert 'HTTP 200' in page.inner_text('main') and 'ada@example.com' in page.inner_text('main')
            page.screenshot(path=str(shots/'5-profile.png'), full_page=True)
            page.click('text=Show my items')
            page.fill('input[name=email]', 'ada@example.com')
            page.click('button:has-text("Sign in")')
            page.wait_for_url(base + '/items')
            looks_finished(page, width, 'items page')
            assert page.locator('main li').all_inner_texts() == ['Item 1', 'Item 2', 'Item 3']
            page.screenshot(path=str(shots/'6-items.png'), full_page=True)
            page.goto(base + '/')
            page.click('button:has-text("Log out")')
            page.wait_for_url(base + '/login')
            page.goto(base + '/')
            assert page.url == base + '/login'
            # A login that fails (here: the user presses Deny) ends on the error page, styled, saying why
            page.click('text=Log in with the DevProvider')
            page.click('button:has-text("Deny")')
            page.wait_for_url(base + '/error')
            looks_finished(page, width, 'error page')
            assert 'denied' in page.inner_text('.error').lower(), page.inner_text('main')
            page.screenshot(path=str(shots/'4-error.png'), full_page=True)
            # The icon a browser asks for by itself is there
            assert page.request.get(base + '/favicon.ico').headers['content-type'] in ('image/x-icon', 'image/vnd.microsoft.icon')
        finally: browser.close()
    assert (shots/'3-logged-in.png').stat().st_size > 5000
    assert external == [], external
    assert failed == [], failed
