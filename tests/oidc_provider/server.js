// A real OpenID provider (npm `oidc-provider`, OpenID Certified) on a loopback port, for fasthtml_oauth's end-to-end tests.
//
//   node tests/oidc_provider/server.js --port 9000 --redirect-uri http://127.0.0.1:5001/redirect [--redirect-uri ...]
//        [--post-logout-redirect-uri URL ...] [--backchannel-logout-uri URL] [--access-token-ttl SECONDS]
//        [--device-flow [--device-interval SECONDS] [--device-code-ttl SECONDS]] [--native-client-id ID]
//
// Every option may also come from the environment: OP_PORT, OP_HOST (default 127.0.0.1), OP_CLIENT_ID, OP_CLIENT_SECRET,
// OP_REDIRECT_URIS (space-separated). The issuer is http://HOST:PORT; HOST must be a loopback name or address.
//
// Two static confidential clients share the redirect URIs: CLIENT_ID authenticates with client_secret_post (the
// library's default) and CLIENT_ID + '-basic' with client_secret_basic. Both may use refresh tokens; PKCE (S256 only) is
// required of every client; revocation is on; every authorization response carries `iss` (RFC 9207). Logout is on:
// RP-initiated (`end_session_endpoint`, to the given post-logout redirect URIs) and back-channel (logout tokens POSTed
// to the given back-channel logout URI, naming the session: id_tokens carry `sid`).
// Access tokens live for --access-token-ttl seconds (a positive whole number; default: oidc-provider's own, one
// hour), so a test can watch one expire and be refreshed; with it the provider allows no clock skew (its
// `clockTolerance`, 15 s by default, is 0), so it refuses an access token as soon as it has expired.
// --device-flow turns on the device authorization grant (RFC 8628: `device_authorization_endpoint` in discovery, the
// user-code page at /device) and lets every client use `urn:ietf:params:oauth:grant-type:device_code`. oidc-provider
// sends no `interval` in its device answers (so clients poll every 5 s, RFC 8628's default): --device-interval adds
// one; --device-code-ttl sets how many seconds a device code lives (default: oidc-provider's own, ten minutes).
// --native-client-id registers a public native client (RFC 8252: `application_type` native, no secret, token
// endpoint auth `none`, PKCE) whose redirect URIs are http://127.0.0.1/callback and http://[::1]/callback;
// oidc-provider matches loopback redirect URIs of native clients on any port, so a tool may listen where it likes.
// Without these options there is no device flow and no native client.
// Any login name signs in (the default devInteractions login and consent forms; the password is ignored), with claims
// derived from it: `ada@example.com` gets sub `user-` + the first 16 hex digits of sha256(login), that email (verified),
// and name `Ada`; a login without `@` gets `<login>@example.test`.
//
// Logs go to stderr only. Each token request is logged as a line `oidc-provider grant.success <grant_type>` or
// `oidc-provider grant.error <grant_type> <error>`, and each revoked grant as `oidc-provider grant.revoked`, so a test
// can count the refreshes it caused. The process exits on SIGTERM/SIGINT, when its parent dies, and (with --watch-stdin)
// when its stdin closes, so a parent that holds a pipe to it takes it along however it ends.
import { createHash } from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';

// oidc-provider prints notices with console.info (stdout): send everything to stderr
console.log = console.info = (...args) => console.error(...args);
const { default: Provider } = await import('oidc-provider');

const { values: opts } = parseArgs({
  options: {
    port: { type: 'string' }, host: { type: 'string' },
    'client-id': { type: 'string' }, 'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true },
    'post-logout-redirect-uri': { type: 'string', multiple: true },
    'backchannel-logout-uri': { type: 'string' },
    'access-token-ttl': { type: 'string' },
    'device-flow': { type: 'boolean' }, 'device-interval': { type: 'string' }, 'device-code-ttl': { type: 'string' },
    'native-client-id': { type: 'string' },
    'watch-stdin': { type: 'boolean' },
  },
});
const env = process.env;
const port = Number(opts.port ?? env.OP_PORT);
const host = opts.host ?? env.OP_HOST ?? '127.0.0.1';
const clientId = opts['client-id'] ?? env.OP_CLIENT_ID ?? 'fasthtml-test';
const clientSecret = opts['client-secret'] ?? env.OP_CLIENT_SECRET ?? 'test-secret';
const redirectUris = opts['redirect-uri'] ?? (env.OP_REDIRECT_URIS ?? '').split(/\s+/).filter(Boolean);
const postLogoutUris = opts['post-logout-redirect-uri'] ?? [];
const backchannelUri = opts['backchannel-logout-uri'];
if (!Number.isInteger(port) || port <= 0 || port > 65535) { console.error('server.js: give --port (or OP_PORT)'); process.exit(2); }
if (!redirectUris.length) { console.error('server.js: give --redirect-uri (or OP_REDIRECT_URIS)'); process.exit(2); }
const accessTokenTtl = opts['access-token-ttl'] === undefined ? undefined : Number(opts['access-token-ttl']);
if (accessTokenTtl !== undefined && !(Number.isSafeInteger(accessTokenTtl) && accessTokenTtl > 0)) {
  console.error('server.js: --access-token-ttl is a positive whole number of seconds'); process.exit(2);
}
function seconds(name) {
  const value = opts[name] === undefined ? undefined : Number(opts[name]);
  if (value !== undefined && !(Number.isSafeInteger(value) && value > 0)) {
    console.error(`server.js: --${name} is a positive whole number of seconds`); process.exit(2);
  }
  return value;
}
const deviceFlow = Boolean(opts['device-flow']);
const deviceInterval = seconds('device-interval'), deviceCodeTtl = seconds('device-code-ttl');
if (!deviceFlow && (deviceInterval || deviceCodeTtl)) {
  console.error('server.js: --device-interval and --device-code-ttl need --device-flow'); process.exit(2);
}
const nativeClientId = opts['native-client-id'];
if (!['localhost', '127.0.0.1', '::1'].includes(host)) { console.error('server.js: --host must be localhost, 127.0.0.1 or ::1'); process.exit(2); }
const hostPart = host.includes(':') ? `[${host}]` : host;
const issuer = `http://${hostPart}:${port}`;

function claimsFor(login) {
  const email = login.includes('@') ? login : `${login}@example.test`;
  const local = email.split('@')[0];
  return {
    sub: `user-${createHash('sha256').update(login).digest('hex').slice(0, 16)}`,
    email, email_verified: true,
    name: local.charAt(0).toUpperCase() + local.slice(1),
  };
}

const grantTypes = ['authorization_code', 'refresh_token',
                    ...(deviceFlow ? ['urn:ietf:params:oauth:grant-type:device_code'] : [])];
const client = (id, auth) => ({
  client_id: id, client_secret: clientSecret, redirect_uris: redirectUris,
  grant_types: grantTypes, response_types: ['code'],
  token_endpoint_auth_method: auth,
  post_logout_redirect_uris: postLogoutUris,
  ...(backchannelUri ? { backchannel_logout_uri: backchannelUri, backchannel_logout_session_required: true } : {}),
});

// A public client for tools (RFC 8252 §7.3 loopback redirects, any port)
const nativeClient = (id) => ({
  client_id: id, application_type: 'native', token_endpoint_auth_method: 'none', grant_types: grantTypes,
  response_types: ['code'], redirect_uris: ['http://127.0.0.1/callback', 'http://[::1]/callback'],
});
const ttl = { ...(accessTokenTtl ? { AccessToken: accessTokenTtl } : {}),
              ...(deviceCodeTtl ? { DeviceCode: deviceCodeTtl } : {}) };

const provider = new Provider(issuer, {
  clients: [client(clientId, 'client_secret_post'), client(`${clientId}-basic`, 'client_secret_basic'),
            ...(nativeClientId ? [nativeClient(nativeClientId)] : [])],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  scopes: ['openid', 'offline_access', 'email', 'profile'],
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => claimsFor(id) }),
  pkce: { methods: ['S256'], required: () => true },
  features: { devInteractions: { enabled: true }, revocation: { enabled: true }, rpInitiatedLogout: { enabled: true },
              backchannelLogout: { enabled: true }, ...(deviceFlow ? { deviceFlow: { enabled: true } } : {}) },
  // Plain-http test issuer: a SameSite=None cookie without Secure would be dropped by Chromium
  cookies: { keys: ['fasthtml-oauth-test-only-key'], long: { sameSite: 'lax' }, short: { sameSite: 'lax' } },
  // Refresh tokens are issued when the login asked for offline_access (with prompt=consent) and the client may refresh
  issueRefreshToken: async (ctx, cl, code) => cl.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
  // ttl is merged with the other artifacts' defaults
  ...(Object.keys(ttl).length ? { ttl } : {}), ...(accessTokenTtl ? { clockTolerance: 0 } : {}),
});
// oidc-provider's device answers carry no `interval`: add the one asked for
if (deviceInterval) {
  provider.use(async (ctx, next) => {
    await next();
    const answer = ctx.oidc?.route === 'device_authorization' && ctx.status === 200 && ctx.body;
    if (answer?.device_code) answer.interval = deviceInterval;
  });
}
provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error:', err));
// One line per token request and revoked grant: what the tests count refreshes by
provider.on('grant.success', (ctx) => console.error(`oidc-provider grant.success ${ctx.oidc.params?.grant_type}`));
provider.on('grant.error', (ctx, err) => {
  console.error(`oidc-provider grant.error ${ctx.oidc?.params?.grant_type} ${err.error}`);
});
provider.on('grant.revoked', () => console.error('oidc-provider grant.revoked'));

// `localhost` listens on 127.0.0.1, and on ::1 too where the machine has IPv6 loopback; never on other interfaces
const callback = provider.callback();
const servers = [];
function listen(addr, optional) {
  const server = http.createServer(callback);
  server.on('error', (err) => {
    if (optional) return console.error(`oidc-provider: not listening on ${addr} (${err.code})`);
    console.error(`server.js: cannot listen on ${addr}:${port}: ${err.message}`);
    process.exit(1);
  });
  server.listen(port, addr, () => console.error(`oidc-provider listening on ${addr}:${port}, issuer ${issuer}`));
  servers.push(server);
}
if (host === 'localhost') { listen('127.0.0.1', false); listen('::1', true); } else listen(host, false);

let stopping = false;
function stop(why) {
  if (stopping) return;
  stopping = true;
  console.error(`oidc-provider stopping (${why})`);
  let open = servers.length;
  for (const server of servers) {
    server.close(() => { open -= 1; if (!open) process.exit(0); });
    server.closeAllConnections();
  }
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
process.on('SIGHUP', () => stop('SIGHUP'));
// The parent died if we were re-parented, or if it held our stdin open and it closed
const parent = process.ppid;
setInterval(() => { if (process.ppid !== parent) stop('parent died'); }, 500).unref();
if (opts['watch-stdin']) {
  process.stdin.on('end', () => stop('stdin closed'));
  process.stdin.on('error', () => stop('stdin error'));
  process.stdin.resume();
}
