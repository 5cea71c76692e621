"""A DevProvider in a process of its own, served by uvicorn (`uvicorn dev_provider_app:app`), configured by environment
variables: ISSUER (its URL), REDIRECT_URIS (space-separated) of the client `app` / `app-secret`, ROTATE_REFRESH (`1`,
the default: a refresh token is used once) and LATENCY (JSON seconds per endpoint, e.g. `{"token": 0.5}`).
Besides the provider's endpoints it answers GET /test/hits: its requests per endpoint so far, as JSON"""
import json, os
from starlette.responses import JSONResponse
from fasthtml_oauth.devprovider import DevProvider

dp = DevProvider(issuer=os.environ['ISSUER'])
dp.register('app', 'app-secret', os.environ['REDIRECT_URIS'].split())
dp.rotate_refresh = os.environ.get('ROTATE_REFRESH', '1') == '1'
dp.latency = json.loads(os.environ.get('LATENCY', '{}'))

async def app(scope, receive, send):
    if scope['type'] == 'http' and scope['path'] == '/test/hits': await JSONResponse(dp.hits)(scope, receive, send)
    else: await dp(scope, receive, send)
