"""The pytest plugin (`fasthtml_oauth.testing`): registered by the package's entry point; `login_as` with kept tokens
and with several OAuth objects"""
import asyncio, os, subprocess, sys, textwrap
from importlib.metadata import entry_points
import pytest
from starlette.testclient import TestClient
from fasthtml.common import FastHTML, P
from fasthtml_oauth import OAuth
from fasthtml_oauth.devprovider import DevProvider

def run_pytest(folder, *args) -> subprocess.CompletedProcess:
    "pytest in a process of its own on `folder`, with plugins loaded as an app's test run loads them"
    env = {k: v for k, v in os.environ.items() if not k.startswith('PYTEST_')}  # e.g. PYTEST_DISABLE_PLUGIN_AUTOLOAD
    cmd = [sys.executable, '-m', 'pytest', '-q', '--color=no', '-p', 'no:cacheprovider', *args]
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=120)

def test_the_entry_point_names_the_plugin():
    eps = entry_points(group='pytest11')
    assert [ep.value for ep in eps if ep.name == 'fasthtml_oauth'] == ['fasthtml_oauth.testing']

def test_fixtures_need_no_import(tmp_path):
    "A test file that imports nothing from `fasthtml_oauth.testing` gets `dev_provider` and `login_as`"
    (tmp_path/'test_app.py').write_text(textwrap.dedent('''
        from fasthtml.common import FastHTML, P
        from fasthtml_oauth import OAuth

        class Everyone(OAuth):
            def get_auth(self, info, ident, session, state): return True

        def test_login(dev_provider, login_as):
            app = FastHTML(secret_key='a-test-secret-key-of-length')
            Everyone(app, dev_provider.client(), login_sessions=':memory:')
            app.get('/')(lambda auth: P(f'auth={auth}'))
            sub = dev_provider.user_claims('ada@example.com')['sub']
            assert f'auth={sub}' in login_as(app, 'ada@example.com').get('/').text

        def test_a_fresh_provider_per_test(dev_provider):
            assert dev_provider.clients == {}
        '''))
    res = run_pytest(tmp_path)
    assert res.returncode == 0 and '2 passed' in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]
    # with plugin autoloading off, the fixtures are gone: they came from the entry point, not from anything imported
    res = run_pytest(tmp_path, '-p', 'no:fasthtml_oauth')
    assert res.returncode == 1 and "fixture 'dev_provider' not found" in res.stdout, res.stdout[-3000:]

def test_importing_the_package_loads_no_plugin():
    "An app that imports the package loads neither the plugin nor pytest"
    code = "import sys, fasthtml_oauth; print([m for m in ('pytest', 'fasthtml_oauth.testing') if m in sys.modules])"
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == '[]'

class Everyone(OAuth):
    def get_auth(self, info, ident, session, state): return True

def session(b) -> dict: return b.app.decode_session(b.cookies['session_'])

def test_login_as_keeps_the_token(dev_provider, login_as):
    "With `keep_tokens=True`, the login's token is in the store afterwards, with the scopes `login_as` asked for"
    app = FastHTML(secret_key='a-test-secret-key-of-length')
    oauth = Everyone(app, dev_provider.client(), keep_tokens=True, login_sessions=':memory:')
    b = login_as(app, 'ada@example.com', scopes='openid email items')
    auth = session(b)['auth']
    tok = asyncio.run(oauth.fresh_token(auth))  # the kept token, as a page's API call gets it
    assert (tok['scope'], dev_provider.hits['token']) == ('openid email items', 1)  # the login's, not a refresh
    assert dev_provider.access[tok.access_token]['user']['email'] == 'ada@example.com'

def named(app, dp, ns) -> OAuth:
    "An `OAuth` of `app` for provider `dp`, with namespace and callback path `ns`"
    cli = dp.client(f'http://localhost/redirect/{ns}', ns)
    return Everyone(app, cli, redir_path=f'/redirect/{ns}', ns=ns, login_sessions=':memory:')

def test_login_as_with_two_oauth(dev_provider, login_as):
    "An app with an `OAuth` per provider (`ns`): `login_as` picks the one on this test's provider, or the one named"
    app = FastHTML(secret_key='a-test-secret-key-of-length')
    theirs = named(app, DevProvider('http://127.0.0.1:8766', alg='ES256'), 'theirs')
    mine = named(app, dev_provider, 'mine')
    app.get('/')(lambda auth: P(f'auth={auth}'))
    sub = dev_provider.user_claims('ada@example.com')['sub']
    b = login_as(app, 'ada@example.com')
    assert (session(b)['auth'], session(b)['oauth_via']) == (f'mine:{sub}', mine.redir_path)
    assert f'auth=mine:{sub}' in b.get('/').text
    with pytest.raises(ValueError, match='No client of this app calls this provider'):
        login_as(app, 'ada@example.com', oauth=theirs)

    both = FastHTML(secret_key='a-test-secret-key-of-length')
    one, two = named(both, dev_provider, 'one'), named(both, dev_provider, 'two')
    with pytest.raises(ValueError, match='oauth='): login_as(both, 'ada@example.com')
    assert session(login_as(both, 'ada@example.com', oauth=two))['auth'] == f'two:{sub}'
    assert session(login_as(both, 'ada@example.com', oauth=one))['auth'] == f'one:{sub}'

def test_login_as_reuses_a_test_client(dev_provider, login_as):
    "A `TestClient` given to `login_as` is the one that holds the login; logging in again switches users"
    app = FastHTML(secret_key='a-test-secret-key-of-length')
    Everyone(app, dev_provider.client(), login_sessions=':memory:')
    b = TestClient(app, base_url='http://localhost')
    assert login_as(b, 'ada@example.com') is b
    assert session(login_as(b, 'bob@example.com'))['auth'] == dev_provider.user_claims('bob@example.com')['sub']
