#!/usr/bin/env node
// A real OpenID Connect provider (npm `oidc-provider`) for nmc console tests, on 127.0.0.1 only.
//
//   node oidc_provider.mjs --port P --config FILE [--exit-on-stdin-close]
//
// FILE (JSON): {"clients":  [{"client_id", "client_secret", "redirect_uris": [...],
//                             "post_logout_redirect_uris": [...], ...other client metadata}],
//               "accounts": [{"sub", "email", "name", "groups": [...], "password"}]}
//
// Issuer http://127.0.0.1:P. Authorization code flow only, PKCE (S256) required for every client.
// Scopes openid email profile groups; the ID token carries email, email_verified, name, groups.
// Login page: our own small form (labelled "Login" and "Password") that checks the account's password;
// the login may be the account's `sub` or its `email`. Consent is granted automatically.
// Prints exactly "ready" on stdout once listening (all logging goes to stderr); exits 0 on SIGTERM/SIGINT.
// Signing key and cookie keys are generated at start: nothing secret is read from or written to disk.
import { generateKeyPairSync, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

// Keep stdout for the "ready" line alone: oidc-provider prints notices with console.info.
console.log = console.info = console.error;

const fail = (msg) => { console.error(`oidc_provider: ${msg}`); process.exit(2); };
const { values: args } = parseArgs({
  options: { port: { type: 'string' }, config: { type: 'string' }, 'exit-on-stdin-close': { type: 'boolean' } },
});
const port = Number(args.port);
if (!Number.isInteger(port) || port < 1 || port > 65535) fail('--port P (1-65535) is required');
if (!args.config) fail('--config FILE is required');
let config;
try { config = JSON.parse(readFileSync(args.config, 'utf8')); } catch (e) { fail(`cannot read config: ${e.message}`); }
if (!Array.isArray(config?.clients) || !Array.isArray(config?.accounts)) fail('config needs "clients" and "accounts" arrays');
for (const a of config.accounts) {
  if (typeof a.sub !== 'string' || typeof a.password !== 'string') fail('each account needs string "sub" and "password"');
  if (a.groups !== undefined && !(Array.isArray(a.groups) && a.groups.every((g) => typeof g === 'string'))) {
    fail(`account ${a.sub}: "groups" must be an array of strings`);
  }
}

// Imported after the console redirect so that its start-up warnings also land on stderr.
const { default: Provider } = await import('oidc-provider');

const accounts = new Map(config.accounts.map((a) => [a.sub, a]));
const issuer = `http://127.0.0.1:${port}`;

// Fresh RS256 signing key for this run (RS256 is the default ID token algorithm an RP must support).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };

// Self-contained HTML (the library's default pages @import Google Fonts, unreachable here, and lack lang/labels).
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)} – nmc test identity provider</title>
<style>
body{font-family:system-ui,sans-serif;background:#f4f4f4;color:#1a1a1a;margin:2rem}
main{max-width:22rem;margin:0 auto;background:#fff;padding:1.5rem;border:1px solid #767676;border-radius:4px}
label{display:block;margin-top:1rem;font-weight:600}
input{display:block;width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem;border:1px solid #767676}
button{margin-top:1.25rem;width:100%;padding:.6rem;font-size:1rem;background:#0b57d0;color:#fff;border:0;border-radius:4px;cursor:pointer}
button.secondary{background:#fff;color:#0b57d0;border:1px solid #0b57d0}
.error{color:#a50e0e;font-weight:600}a{color:#0b57d0}
</style></head>
<body><main>${body}</main></body></html>`;

const loginPage = ({ uid, clientId, login = '', error }) => page('Sign in', `
<h1>Sign in</h1>
<p>to continue to <strong>${esc(clientId)}</strong></p>
${error ? `<p class="error" role="alert">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}" autocomplete="off">
  <label for="login">Login</label>
  <input id="login" name="login" type="text" autocomplete="username" required value="${esc(login)}"${login ? '' : ' autofocus'}>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password" required${login ? ' autofocus' : ''}>
  <button type="submit">Sign in</button>
</form>
<p><a href="/interaction/${esc(uid)}/abort">Cancel</a></p>`);

const provider = new Provider(issuer, {
  clients: config.clients.map(({ client_id, client_secret, redirect_uris, post_logout_redirect_uris = [], ...rest }) => ({
    client_id, client_secret, redirect_uris, post_logout_redirect_uris,
    grant_types: ['authorization_code'], response_types: ['code'],
    ...rest, // e.g. "token_endpoint_auth_method": "client_secret_post" (default: client_secret_basic)
  })),
  responseTypes: ['code'],
  pkce: { required: () => true }, // oidc-provider 9 accepts only S256
  // Each key of `claims` is a scope and becomes discoverable; openid always yields `sub`.
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  // Put the scope-granted claims into the ID token too (by default they would only be at userinfo).
  conformIdTokenClaims: false,
  async findAccount(_ctx, sub) {
    const a = accounts.get(sub);
    if (!a) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, email: a.email, email_verified: a.email !== undefined, name: a.name, groups: a.groups ?? [] };
      },
    };
  },
  jwks: { keys: [jwk] },
  // Over plain http oidc-provider sets cookies without `Secure` (it follows ctx.secure), so no tweak needed.
  cookies: {
    keys: [randomBytes(32).toString('base64url')],
    // Cookies ignore ports: on 127.0.0.1 the console shares this jar, so avoid generic names like "_session".
    names: { session: 'nmc_op_session', interaction: 'nmc_op_interaction', resume: 'nmc_op_interaction_resume' },
  },
  features: {
    devInteractions: { enabled: false }, // they accept any login without a password: replaced below
    rpInitiatedLogout: {
      enabled: true,
      logoutSource: async (ctx, form) => {
        ctx.body = page('Sign out', `<h1>Sign out</h1><p>Do you want to sign out of the nmc test identity provider?</p>${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes" autofocus>Yes, sign me out</button>
<button type="submit" form="op.logoutForm" class="secondary">No, stay signed in</button>`);
      },
      postLogoutSuccessSource: async (ctx) => { ctx.body = page('Signed out', '<h1>Signed out</h1><p>You have signed out.</p>'); },
    },
  },
  clientBasedCORS: () => false, // the RP exchanges codes server-side; no browser CORS needed
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Error', `<h1>Error</h1>${Object.entries(out).map(([k, v]) => `<p><strong>${esc(k)}</strong>: ${esc(v)}</p>`).join('')}`);
  },
  ttl: { AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600, Interaction: 600, Session: 86400, Grant: 86400 },
});
provider.on('server_error', (_ctx, err) => console.error('oidc_provider server_error:', err));

const sameSecret = (a, b) => {
  const x = Buffer.from(String(a)); const y = Buffer.from(String(b));
  return x.length === y.length && timingSafeEqual(x, y);
};
const readForm = async (req) => {
  let body = '';
  for await (const chunk of req) { body += chunk; if (body.length > 64 * 1024) throw new Error('form too large'); }
  return new URLSearchParams(body);
};
const send = (res, status, html) => {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
};

// Our interaction routes; everything else goes to oidc-provider. `interactionDetails` reads the
// interaction cookie, so a request whose uid does not match it is refused.
async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, page('Error', '<h1>Error</h1><p>Interaction mismatch.</p>'));
  const { prompt, params, session } = details;
  if (action === 'abort') {
    return provider.interactionFinished(req, res,
      { error: 'access_denied', error_description: 'End-User aborted interaction' }, { mergeWithLastSubmission: false });
  }
  if (prompt.name === 'login') {
    if (req.method === 'GET') return send(res, 200, loginPage({ uid, clientId: params.client_id, login: params.login_hint }));
    const form = await readForm(req);
    const login = form.get('login') ?? '';
    const account = accounts.get(login) ?? config.accounts.find((a) => a.email !== undefined && a.email === login);
    if (!account || !sameSecret(form.get('password') ?? '', account.password)) {
      return send(res, 200, loginPage({ uid, clientId: params.client_id, login, error: 'Invalid login or password.' }));
    }
    return provider.interactionFinished(req, res, { login: { accountId: account.sub } }, { mergeWithLastSubmission: false });
  }
  if (prompt.name === 'consent') {
    // First-party test clients: grant whatever the authorization request asked for, without a page.
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '));
    return provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
  }
  return send(res, 501, page('Error', `<h1>Error</h1><p>Prompt ${esc(prompt.name)} is not implemented.</p>`));
}

// Static clients are only validated when first used: look each one up now so that bad metadata fails here.
for (const { client_id } of config.clients) {
  try {
    if (!await provider.Client.find(String(client_id))) fail(`client ${client_id}: not found`);
  } catch (e) { fail(`client ${client_id}: ${e.error_description ?? e.message}`); }
}

const oidc = provider.callback();
const server = createServer((req, res) => {
  const m = /^\/interaction\/([\w-]+)(\/abort)?$/.exec(new URL(req.url, issuer).pathname);
  if (!m) return oidc(req, res);
  interaction(req, res, m[1], m[2] ? 'abort' : 'form').catch((err) => {
    console.error('oidc_provider interaction error:', err.message);
    if (!res.headersSent) send(res, 400, page('Error', `<h1>Error</h1><p>${esc(err.message)}</p>`));
  });
});
server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${port}: ${err.message}`));
server.listen(port, '127.0.0.1', () => process.stdout.write('ready\n'));

const stop = () => { server.close(() => process.exit(0)); server.closeAllConnections(); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// Opt-in: with stdin a pipe held by the test, exit when the test process dies and the pipe closes,
// so a crashed test leaves no provider behind.
if (args['exit-on-stdin-close']) {
  process.stdin.on('end', stop).on('error', stop).resume();
}
