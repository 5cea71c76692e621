"The demo app in real headless Chromium: log in through the embedded DevProvider, count to 2, log out"
from pathlib import Path
import pytest
from playwright.sync_api import sync_playwright
from fasthtml_oauth.demo import make_app
from conftest import free_port

ARTIFACTS = Path(__file__).parent/'artifacts'
CHROMIUM = dict(executable_path='/usr/bin/chromium', args=['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                '--disable-component-update', '--disable-sync', '--no-first-run'])

def test_demo_login_count_logout(serve):
    port = free_port()
    base = f'http://localhost:{port}'
    demo, _ = make_app(base)
    serve(demo, port=port)
    ARTIFACTS.mkdir(exist_ok=True)
    external = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(**CHROMIUM)
        page = browser.new_page(viewport=dict(width=900, height=600))
        page.on('request', lambda r: r.url.startswith(base) or external.append(r.url))
        page.goto(base + '/')
        assert page.url == base + '/login'
        page.click('text=Log in with the DevProvider')
        assert 'Development provider' in page.content()
        page.fill('input[name=email]', 'ada@example.com')
        page.fill('input[name=name]', 'Ada Lovelace')
        page.click('button:has-text("Sign in")')
        page.wait_for_url(base + '/')
        assert page.inner_text('#count') == '0'
        page.click('text=Increment'); page.wait_for_function("document.querySelector('#count').innerText == '1'")
        page.click('text=Increment'); page.wait_for_function("document.querySelector('#count').innerText == '2'")
        assert 'Ada Lovelace' in page.content()
        page.screenshot(path=str(ARTIFACTS/'demo-logged-in.png'))
        page.click('button:has-text("Log out")')
        page.wait_for_url(base + '/login')
        page.goto(base + '/')
        assert page.url == base + '/login'
        browser.close()
    assert (ARTIFACTS/'demo-logged-in.png').stat().st_size > 5000
    assert external == [], external
