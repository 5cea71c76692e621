"The README's quick start: a client, and the start of a login"
import os
from fasthtml_oauth.core import AppClient

cli = AppClient(os.getenv('AUTH_CLIENT_ID', 'my-client-id'), os.getenv('AUTH_CLIENT_SECRET', 'my-client-secret'),
                scope='openid email profile', base_url='https://auth.example/authorize',
                token_url='https://auth.example/token', info_url='https://auth.example/userinfo')
lr = cli.login_request('http://localhost:5001/redirect')
print(f"Send the user to:\n  {lr.url}\nthen, at /redirect, check state == {lr.state!r} and exchange the code with the verifier.")
