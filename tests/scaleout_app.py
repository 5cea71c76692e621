"One app process of the scale-out test: served by uvicorn, configured by environment variables"
import os
from fasthtml.common import FastHTML, P, A
from fasthtml_oauth import OAuth, OIDCAppClient
from fasthtml_oauth.sessions import RedisStore

class Auth(OAuth):
    def get_auth(self, info, ident, session, state): return True

app = FastHTML(secret_key=os.environ['APP_SECRET'], default_hdrs=False)
store = os.environ.get('STORE', 'oauth_logins.db')  # a shared SQLite file by default, or a Redis server's URL
oauth = Auth(app, OIDCAppClient('app', 'app-secret', issuer=os.environ['ISSUER'], timeout=5), base_url=os.environ['BASE_URL'],
             login_sessions=RedisStore(store) if store.startswith('redis://') else store)
app.get('/login')(lambda req: A('Log in', href=oauth.login_link(req), id='login'))
app.get('/error')(lambda session: P(session.get('oauth_error'), id='error'))
app.get('/account')(lambda auth: P(f'{os.environ["NAME"]}:{auth}', id='auth'))

@app.post('/everywhere')
async def everywhere(auth): return P(str(await oauth.logout_everywhere(auth)), id='ended')
