"Every provider fault ends on the error page with a clear message: never a 500, no token in the logs, and the app keeps serving"
import logging, pytest
from inproc import make, browser, login, failed, start, session
from conftest import free_port

@pytest.fixture
def setup(caplog):
    caplog.set_level(logging.DEBUG)
    return make(client_kw=dict(timeout=0.5))

def keeps_serving(dp, app, oauth, caplog):
    "After the fault is gone, another user logs in; no token ever reached a log record"
    dp.faults.clear()
    b = browser(app)
    assert login(b, dp, oauth, 'next@example.com').headers['location'] == '/'
    # Everything logged, except the test browser's own request lines (httpx logs the URLs it fetches, callback codes included)
    logged = '\n'.join(r.getMessage() + str(r.exc_info or '') for r in caplog.records if not (r.name.startswith('httpx') and 'http://localhost/' in r.getMessage()))
    for tok in [l['token'] for l in oauth.logins]:
        for k in ('access_token', 'refresh_token', 'id_token'):
            assert not tok.get(k) or tok[k] not in logged
    for code in list(dp.spent): assert code not in logged

FAULTS = [  # (switch, value, words the user sees)
    ('token', 'http_500', 'HTTP 500'),
    ('token', 'error_200', 'server_error'),
    ('token', 'malformed_json', 'malformed JSON'),
    ('token', 'hang', 'did not answer in time'),
    ('id_token', 'bad_signature', 'signature'),
    ('id_token', 'wrong_iss', 'issued by'),
    ('id_token', 'wrong_aud', 'another client'),
    ('id_token', 'expired', 'expired'),
    ('id_token', 'wrong_nonce', 'nonce'),
]

@pytest.mark.parametrize('where,fault,words', FAULTS, ids=[f'{w}-{f}' for w, f, _ in FAULTS])
def test_provider_fault(setup, caplog, where, fault, words):
    dp, cli, app, oauth = setup
    dp.hang_for, dp.faults[where] = 2, fault
    b = browser(app)
    assert words in failed(app, b, login(b, dp, oauth))
    keeps_serving(dp, app, oauth, caplog)

def test_invalid_grant_400(setup, caplog):
    dp, cli, app, oauth = setup
    dp.code_ttl = -1  # every code has expired by the time it is exchanged
    b = browser(app)
    assert 'invalid_grant' in failed(app, b, login(b, dp, oauth))
    dp.code_ttl = 60
    keeps_serving(dp, app, oauth, caplog)

def test_connection_refused(setup, caplog):
    dp, cli, app, oauth = setup
    b = browser(app)
    to_provider = start(b, oauth)
    cli.token_url = f'http://127.0.0.1:{free_port()}/token'  # nothing listens there
    dp_transport, cli.transport = cli.transport, None  # real sockets for this client
    assert 'Could not reach' in failed(app, b, b.get(dp.approve(to_provider, 'ada@example.com')))
    cli.token_url, cli.transport = dp.url('token'), dp_transport
    keeps_serving(dp, app, oauth, caplog)

def test_userinfo_401(setup, caplog):
    dp, cli, app, oauth = setup
    dp.id_token_claims, dp.token_ttl = ('sub',), -1  # the id_token lacks email, and the access token is already expired at userinfo
    b = browser(app)
    assert 'HTTP 401' in failed(app, b, login(b, dp, oauth))
    dp.id_token_claims, dp.token_ttl = None, 3600
    keeps_serving(dp, app, oauth, caplog)

def test_jwks_unreachable(caplog):
    dp, cli, app, oauth = make(client_kw=dict(timeout=0.5))
    caplog.set_level(logging.DEBUG)
    dp.faults['jwks'] = 'http_500'  # the client has never fetched the JWKS, so it must now
    b = browser(app)
    assert 'JWKS' in failed(app, b, login(b, dp, oauth))
    keeps_serving(dp, app, oauth, caplog)

def test_cancel_at_provider(setup, caplog):
    dp, cli, app, oauth = setup
    b = browser(app)
    assert 'access_denied' in failed(app, b, b.get(dp.approve(start(b, oauth), 'ada@example.com', deny=True)))
    keeps_serving(dp, app, oauth, caplog)
