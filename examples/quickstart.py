"The README's quick start: a whole login against the in-process DevProvider"
from urllib.parse import urlsplit, parse_qsl
from fasthtml_oauth.core import AppClient
from fasthtml_oauth.devprovider import DevProvider

dp = DevProvider()
dp.register('my-app', 'my-secret', ['http://localhost:5001/redirect'])
cli = AppClient('my-app', 'my-secret', scope='openid email profile', transport=dp.transport, **dp.endpoints)

lr = cli.login_request('http://localhost:5001/redirect')
print(f"1. The app sends the browser to:\n   {lr.url}\n")
callback = dp.approve(lr.url, 'ada@example.com')
print(f"2. The user signs in; the provider sends the browser back to:\n   {callback}\n")
q = dict(parse_qsl(urlsplit(callback).query))
assert q['state'] == lr.state
info = cli.retr_info(q['code'], lr.redirect_uri, lr.code_verifier)
print(f"3. State matches; the code, with the PKCE verifier, buys a token and the user's info:\n   {dict(info)}\n   {cli.token}")
