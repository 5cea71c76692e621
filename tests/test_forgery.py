"Forged, replayed and planted callbacks never log anyone in; arbitrary input never causes a 500 or a login"
from urllib.parse import urlencode, quote
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from inproc import make, browser, login, failed, start, session, query

@pytest.fixture(scope='module')
def setup(): return make()

def test_login_csrf_attacker_code_without_state(setup):
    dp, cli, app, oauth = setup
    stolen = dp.approve(start(browser(app), oauth), 'mallory@example.com')
    victim = browser(app)
    assert 'no state' in failed(app, victim, victim.get('/redirect?code=' + query(stolen)['code']))

def test_login_csrf_attacker_callback_in_victims_browser(setup):
    dp, cli, app, oauth = setup
    stolen = dp.approve(start(browser(app), oauth), 'mallory@example.com')
    victim = browser(app)
    start(victim, oauth)  # the victim has a login of their own in progress: still no match
    assert 'not started in this browser' in failed(app, victim, victim.get(stolen))

def test_wrong_state(setup):
    dp, cli, app, oauth = setup
    b = browser(app)
    cb = dp.approve(start(b, oauth), 'ada@example.com')
    q = query(cb); q['state'] = q['state'][::-1]
    assert 'not started in this browser' in failed(app, b, b.get('/redirect?' + urlencode(q)))

def test_replayed_state(setup):
    dp, cli, app, oauth = setup
    b = browser(app)
    cb = dp.approve(start(b, oauth), 'ada@example.com')
    before_callback = b.cookies.get('session_')
    assert b.get(cb).headers['location'] == '/'
    replay = browser(app)
    replay.cookies.set('session_', before_callback, domain='localhost.local')  # even the session from before the callback: the provider refuses the used code
    assert failed(app, replay, replay.get(cb))
    again = browser(app)
    again.cookies.set('session_', b.cookies.get('session_'), domain='localhost.local')  # the logged-in session: the state was used up
    res = again.get(cb)
    assert res.headers['location'] == '/error' and 'not started in this browser' in session(app, again)['oauth_error']

def test_planted_cookies_ignored(setup):
    dp, cli, app, oauth = setup
    b = browser(app)
    cb = dp.approve(start(b, oauth), 'ada@example.com')
    b.cookies.set('code', 'planted'); b.cookies.set('state', query(cb)['state']); b.cookies.set('iss', 'https://evil.example')
    assert 'no state' in failed(app, b, b.get('/redirect'))
    assert b.get(cb).headers['location'] == '/'

@pytest.mark.parametrize('nxt', ['https://evil.example/', '//evil.example', '/\\evil.example', '\\\\evil.example', '/%2F%2Fevil.example',
                                 '/%5Cevil.example', 'javascript:alert(1)', '/\r\nLocation: https://evil.example', 'evil.example'])
def test_open_redirect_ignored(setup, nxt):
    dp, cli, app, oauth = setup
    assert login(browser(app), dp, oauth, next=nxt).headers['location'] == '/'
    b = browser(app)
    b.get(nxt if nxt.startswith('/') and nxt.isprintable() else '/account')  # the gate remembers only safe paths
    assert not (session(app, b).get('oauth_next') or '/').startswith(('//', '/\\'))

fields = st.dictionaries(st.sampled_from(['code', 'state', 'error', 'error_description', 'iss', 't', 'next', 'user', '_oauth_resubmit']) | st.text(max_size=8),
                         st.text(max_size=60) | st.sampled_from(['', 'access_denied', 'http://127.0.0.1:8765', '%00', '\x00', 'a' * 5000]), max_size=6)
paths = st.sampled_from(['/redirect', '/redirect/start', '/logout', '/account', '/error'])
EXAMPLES = 150

@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=paths, params=fields, raw=st.text(max_size=40), with_login=st.booleans())
def test_fuzz_get(setup, path, params, raw, with_login):
    dp, cli, app, oauth = setup
    b = browser(app)
    if with_login:  # a login in progress, so some states are real
        params = dict(params, state=query(start(b, oauth))['state']) if 'state' in params else params
    qs = urlencode(params) + ('&' + quote(raw, safe='=&%') if raw else '')
    res = b.get(f'{path}?{qs}')
    assert res.status_code < 500, (path, qs, res.status_code)
    assert 'auth' not in session(app, b)

post_app = make(redir_method='post')

@settings(max_examples=EXAMPLES, deadline=None)
@given(path=st.sampled_from(['/redirect', '/logout']), params=fields, resubmit=st.booleans())
def test_fuzz_post(path, params, resubmit):
    dp, cli, app, oauth = post_app
    b = browser(app)
    if resubmit: start(b, oauth)
    res = b.post(path, data=params)
    assert res.status_code < 500, (path, params, res.status_code)
    assert 'auth' not in session(app, b)
