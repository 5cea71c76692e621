"""The OpenID Foundation's RP conformance test plans (Basic, Config, Form Post, RP-Initiated Logout, Back-Channel Logout),
each test id played against a conformance provider that misbehaves as the test requires. Each test writes the log a
certification submission asks for (every exchange, secrets redacted, and the app's decision) to
`tests/artifacts/conformance/<plan>/<test id>.json`; `results.json` there lists every test id with its result."""
import asyncio, json, time
from html import unescape
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit
import pytest
from conformance_op import RP, _new_key

ARTIFACTS = Path(__file__).resolve().parent.parent/'artifacts'/'conformance'
PUBLISHED = Path(__file__).resolve().parent.parent.parent/'nbs'/'explains'/'conformance_results.json'
RESULTS = {}

def record(plan:str, tid:str, rp:RP, expected:str, outcome:dict, choice:str|None=None):
    "Write the test's log and remember its result"
    (d := ARTIFACTS/plan.replace(' ', '-')).mkdir(parents=True, exist_ok=True)
    log = dict(plan=plan, test=tid, expected=expected, choice=choice, outcome=outcome, exchanges=rp.log, time=time.time())
    (d/f'{tid}.json').write_text(json.dumps(log, indent=1, default=str))
    RESULTS[(plan, tid)] = dict(plan=plan, test=tid, expected=expected, choice=choice, decision=outcome.get('decision'))

def refused_with(outcome:dict, text:str) -> bool: return outcome['decision'] == 'refused' and text in unescape(outcome['error'])

# Basic RP (and, with response_mode=form_post, Form Post RP): one login each, the provider misbehaving as the id asks.
# Each case: (test id, faults, what the RP must do, the message it refuses with, the choice the plan leaves, if any)
BASIC = [
    ('rp-response_type-code', {}, 'log in with response_type=code', None, None),
    ('rp-scope-userinfo-claims', dict(id_token_claims=['sub']), 'ask for email and profile, get the claims from user info', None, None),
    ('rp-nonce-invalid', dict(id_token='wrong_nonce'), 'refuse the id_token', 'nonce is not the one this login sent', None),
    ('rp-token_endpoint-client_secret_basic', {}, 'authenticate at the token endpoint with client_secret_basic', None, None),
    ('rp-id_token-aud', dict(id_token='wrong_aud'), 'refuse the id_token', 'meant for another client', None),
    ('rp-id_token-kid-absent-single-jwks', dict(id_token='kid_absent'), 'accept: the one published key verifies it', None, None),
    ('rp-id_token-sig-none', dict(id_token='sig_none'), 'refuse the unsigned id_token', "algorithm 'none'",
     'reject: an unsigned id_token proves nothing, even from the token endpoint over TLS'),
    ('rp-id_token-issuer-mismatch', dict(id_token='wrong_iss'), 'refuse the id_token', 'issued by', None),
    ('rp-id_token-kid-absent-multiple-jwks', dict(id_token='kid_absent', jwks='extra_key'), 'refuse, or try each key', 'key the provider does not publish',
     'reject: with several keys and no kid, the RP cannot tell which key the provider meant, and trying each would let any published key sign'),
    ('rp-id_token-bad-sig-rs256', dict(id_token='bad_signature'), 'refuse the id_token', 'signature does not verify', None),
    ('rp-id_token-iat', dict(id_token='no_iat'), 'refuse the id_token without iat', 'iat', None),
    ('rp-id_token-sig-rs256', {}, 'accept the RS256 id_token', None, None),
    ('rp-id_token-sub', dict(id_token='no_sub'), 'refuse the id_token without sub', 'no subject', None),
    ('rp-userinfo-bad-sub-claim', dict(id_token_claims=['sub'], userinfo='bad_sub'), 'refuse user info about another subject', 'another user', None),
    ('rp-userinfo-bearer-header', dict(id_token_claims=['sub']), 'send the access token in an Authorization: Bearer header', None, None),
]

def set_faults(rp:RP, faults:dict):
    for k, v in faults.items():
        if k == 'id_token_claims': rp.op.id_token_claims = v
        elif k == 'jwks': rp.op.extra = [_new_key('RS256', 'extra-key')]
        else: rp.op.faults[k] = v

def check_basic(tid:str, rp:RP, outcome:dict, refuse:str|None):
    "The RP did what the test id asks"
    if refuse: return refused_with(outcome, refuse)
    ok = outcome['decision'] == 'logged in' and 'ada@example.com' in outcome['page']
    token = [e for e in rp.log if e['who'] == 'rp -> op' and e['url'].endswith('/token')]
    sent = authorize_params(rp)
    if tid == 'rp-response_type-code': ok &= sent['response_type'] == 'code'
    if tid == 'rp-token_endpoint-client_secret_basic': ok &= [e['authorization'] for e in token] == ['Basic <redacted>']
    if tid in ('rp-scope-userinfo-claims', 'rp-userinfo-bearer-header'): ok &= rp.op.userinfo_auth == ['Bearer']
    if tid == 'rp-scope-userinfo-claims': ok &= {'email', 'profile'} <= set(sent['scope'].split())
    return ok

def authorize_params(rp:RP) -> dict:
    "The parameters of the authorization request the app sent the browser to"
    url = next(e['location'] for e in rp.log if (e['location'] or '').startswith(rp.op.url('authorize')))
    return dict(parse_qsl(urlsplit(url).query))

@pytest.mark.parametrize('form_post', [False, True], ids=['Basic RP', 'Form Post RP'])
@pytest.mark.parametrize('tid,faults,expected,refuse,choice', BASIC, ids=[c[0] for c in BASIC])
def test_basic_and_form_post(tid, faults, expected, refuse, choice, form_post):
    rp = RP(form_post=form_post)
    set_faults(rp, faults)
    outcome = rp.login()
    plan = 'Form Post RP' if form_post else 'Basic RP'
    record(plan, tid, rp, expected, outcome, choice)
    assert check_basic(tid, rp, outcome, refuse), outcome

# Config RP: discovery and keys
def test_rp_discovery_openid_configuration():
    rp = RP()
    outcome = rp.login()
    record('Config RP', 'rp-discovery-openid-configuration', rp, 'fetch the discovery document and use its endpoints', outcome)
    fetched = [e['url'] for e in rp.log if e['who'] == 'rp -> op']
    assert outcome['decision'] == 'logged in' and fetched[0].endswith('/.well-known/openid-configuration'), fetched

def test_rp_discovery_jwks_uri_keys():
    rp = RP()
    rp.op.faults['discovery'] = 'random_jwks_uri'
    outcome = rp.login()
    record('Config RP', 'rp-discovery-jwks_uri-keys', rp, 'fetch the keys from the jwks_uri the discovery document names', outcome)
    assert outcome['decision'] == 'logged in' and any('/jwks?run=' in e['url'] for e in rp.log if e['who'] == 'rp -> op')

def test_rp_discovery_issuer_not_matching_config():
    rp = RP()
    rp.op.faults['discovery'] = 'issuer_mismatch'
    outcome = rp.login()
    record('Config RP', 'rp-discovery-issuer-not-matching-config', rp, 'refuse a discovery document naming another issuer', outcome)
    assert refused_with(outcome, 'names issuer') or refused_with(outcome, 'another-issuer'), outcome

def test_config_rp_id_token_sig_none():
    rp = RP()
    rp.op.faults['id_token'] = 'sig_none'
    outcome = rp.login()
    record('Config RP', 'rp-id_token-sig-none', rp, 'refuse the unsigned id_token', outcome, 'reject (as in Basic RP)')
    assert refused_with(outcome, "algorithm 'none'"), outcome

def test_rp_key_rotation_op_sign_key_native():
    "Keys rotated just before the id_token is signed: the RP refetches the JWKS for the unknown kid"
    rp = RP()
    assert rp.login()['decision'] == 'logged in'  # the RP has the old keys now
    rp.op.faults['id_token'] = 'rotate_before_signing'
    outcome = rp.login('bob@example.com')
    record('Config RP', 'rp-key-rotation-op-sign-key-native', rp, 'refetch the keys and accept the id_token', outcome)
    assert outcome['decision'] == 'logged in' and sum('/jwks' in e['url'] for e in rp.log if e['who'] == 'rp -> op') == 2

def test_rp_key_rotation_op_sign_key():
    "Keys rotated after the first id_token: the second login's id_token has a new kid"
    rp = RP()
    assert rp.login()['decision'] == 'logged in'
    rp.op.rotate_keys()
    outcome = rp.login('bob@example.com')
    record('Config RP', 'rp-key-rotation-op-sign-key', rp, 'refetch the keys and accept the id_token', outcome)
    assert outcome['decision'] == 'logged in' and sum('/jwks' in e['url'] for e in rp.log if e['who'] == 'rp -> op') == 2

# RP-Initiated Logout RP: log in, log out through the provider, come back with (or without) the state
LOGOUT = [('rp-init-logout', None, 'come back to the app, logged out'),
          ('rp-init-logout-other-state', 'other_state', 'detect the other state: the error page, still logged out'),
          ('rp-init-logout-no-state', 'no_state', 'detect the missing state: the error page, still logged out')]

def logout_through_provider(rp:RP) -> dict:
    "Log in, press Log out, confirm at the provider, follow the browser back: where it ends and what the app says"
    assert rp.login()['decision'] == 'logged in'
    to_op = rp.browser.post('/logout').headers['location']
    back = rp.op.confirm_logout(to_op)
    res = rp.browser.get(back)
    still = rp.browser.get('/').headers.get('location') != '/login'
    q = dict(parse_qsl(urlsplit(to_op).query))
    return dict(sent=sorted(q), back=res.headers.get('location'), logged_in_after=still,
                error=unescape(rp.browser.get('/error').text.split('<p>')[-1].split('</p>')[0]) if res.headers.get('location') == '/error' else None)

@pytest.mark.parametrize('tid,fault,expected', LOGOUT, ids=[c[0] for c in LOGOUT])
def test_rp_initiated_logout(tid, fault, expected):
    rp = RP(provider_logout=True)
    if fault: rp.op.faults['end_session'] = fault
    outcome = logout_through_provider(rp)
    outcome['decision'] = 'logged out' if not outcome['logged_in_after'] else 'still logged in'
    record('RP-Initiated Logout RP', tid, rp, expected, outcome)
    assert outcome['sent'] == ['client_id', 'id_token_hint', 'post_logout_redirect_uri', 'state'] and not outcome['logged_in_after']
    assert outcome['back'] == ('/login' if fault is None else '/error'), outcome

# Back-Channel Logout RP: the RP logs out through the provider, which then sends it a logout token (good or bad)
BACKCHANNEL = [('rp-backchannel-rpinitlogout', None, 200), ('rp-backchannel-rpinitlogout-lt-alg-none', 'alg_none', 400),
               ('rp-backchannel-rpinitlogout-lt-no-event', 'no_event', 400), ('rp-backchannel-rpinitlogout-lt-with-nonce', 'with_nonce', 400),
               ('rp-backchannel-rpinitlogout-lt-wrong-alg', 'wrong_alg', 400), ('rp-backchannel-rpinitlogout-lt-wrong-aud', 'wrong_aud', 400),
               ('rp-backchannel-rpinitlogout-lt-wrong-event', 'wrong_event', 400), ('rp-backchannel-rpinitlogout-lt-wrong-issuer', 'wrong_iss', 400)]

@pytest.mark.parametrize('tid,fault,status', BACKCHANNEL, ids=[c[0] for c in BACKCHANNEL])
def test_backchannel_logout(tid, fault, status):
    rp = RP(provider_logout=True)
    if fault: rp.op.faults['logout_token'] = fault
    outcome = logout_through_provider(rp)
    sent = rp.op.logouts
    outcome |= dict(decision='accepted' if sent and sent[-1]['status'] == 200 else 'rejected', logout_token_answers=sent)
    expected = 'accept the logout token (200) and end the session' if status == 200 else 'reject the logout token with 400 and a JSON error'
    record('Back-Channel Logout RP', tid, rp, expected, outcome)
    assert [s['status'] for s in sent] == [status], sent
    if status == 400: assert json.loads(sent[0]['body'])['error'] == 'invalid_request'
    assert outcome['back'] == '/login' and not outcome['logged_in_after']

def test_zz_results_written_and_published():
    "Every test id above ran and passed; the docs page's results (nbs/explains/conformance_results.json) are this run's"
    ids = {('Basic RP', c[0]) for c in BASIC} | {('Form Post RP', c[0]) for c in BASIC} | {('RP-Initiated Logout RP', c[0]) for c in LOGOUT}
    ids |= {('Back-Channel Logout RP', c[0]) for c in BACKCHANNEL} | {('Config RP', t) for t in (
        'rp-discovery-openid-configuration', 'rp-discovery-jwks_uri-keys', 'rp-discovery-issuer-not-matching-config',
        'rp-id_token-sig-none', 'rp-key-rotation-op-sign-key-native', 'rp-key-rotation-op-sign-key')}
    assert set(RESULTS) == ids, ids ^ set(RESULTS)
    rows = sorted(RESULTS.values(), key=lambda r: (r['plan'], r['test']))
    (ARTIFACTS/'results.json').write_text(json.dumps(rows, indent=1))
    published = json.loads(PUBLISHED.read_text()) if PUBLISHED.exists() else None
    assert published == rows, f"the docs page shows other results: copy {ARTIFACTS/'results.json'} to {PUBLISHED} and run nbdev-test --save on nbs/explains/conformance.ipynb"
