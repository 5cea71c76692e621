"A small OAuth 2 provider stand-in (token, user info, revocation) served over real HTTP by the tests"
import asyncio, base64, hashlib, secrets
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CLIENT_ID, CLIENT_SECRET = 'test-client', 'test-secret'

def s256(v): return base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b'=').decode()

class StandIn:
    "Codes are issued with `grant(email, challenge, redirect_uri)`, as if the user had approved a login"
    def __init__(self): self.codes, self.tokens, self.revoked, self.app = {}, {}, set(), Starlette(routes=[
        Route('/token', self.token, methods=['POST']), Route('/userinfo', self.userinfo),
        Route('/revoke', self.revoke, methods=['POST']), Route('/slow', self.slow, methods=['GET', 'POST'])])

    def grant(self, email, challenge, redirect_uri):
        self.codes[code := secrets.token_urlsafe(12)] = (email, challenge, redirect_uri)
        return code

    async def token(self, req):
        f = await req.form()
        if (f.get('client_id'), f.get('client_secret')) != (CLIENT_ID, CLIENT_SECRET): return JSONResponse(dict(error='invalid_client'), 401)
        if f.get('grant_type') == 'refresh_token':
            email = self.tokens.get(f.get('refresh_token'))
            if not email: return JSONResponse(dict(error='invalid_grant'), 400)
            return self.issue(email)
        email, challenge, redirect_uri = self.codes.pop(f.get('code'), (None, None, None))
        if not email or redirect_uri != f.get('redirect_uri') or s256(f.get('code_verifier', '')) != challenge:
            return JSONResponse(dict(error='invalid_grant', error_description='bad code, redirect_uri or verifier'), 400)
        return self.issue(email, refresh=True)

    def issue(self, email, refresh=False):
        self.tokens[at := secrets.token_urlsafe(16)] = email
        d = dict(access_token=at, token_type='Bearer', expires_in=600)
        if refresh: self.tokens[rt := secrets.token_urlsafe(16)] = email; d['refresh_token'] = rt
        return JSONResponse(d, headers={'Cache-Control': 'no-store'})

    async def userinfo(self, req):
        at = req.headers.get('authorization', '').removeprefix('Bearer ')
        if at not in self.tokens or at in self.revoked: return JSONResponse(dict(error='invalid_token'), 401)
        return JSONResponse(dict(sub='u-' + self.tokens[at], email=self.tokens[at], email_verified=True))

    async def revoke(self, req):
        self.revoked.add((await req.form()).get('token'))
        return Response(status_code=200)

    async def slow(self, req):
        await asyncio.sleep(3)
        return JSONResponse({})
