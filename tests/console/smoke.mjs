#!/usr/bin/env node
// End-to-end smoke test of the test tooling: oidc_provider.mjs + Playwright on Debian's Chromium + axe.
//   node tests/console/smoke.mjs
// Exits 0 when every check passes, 1 otherwise (the steps depend on each other: the first failure stops).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import AxeBuilder from '@axe-core/playwright';
import { chromium } from '@playwright/test';
import {
  ACCOUNTS, CHROMIUM, CHROMIUM_ARGS, CLIENT, HERE, authorizationRequest, exchangeCode, fetchDiscovery,
  isSerious, signIn, startCallbackServer, startProvider, summarizeViolations, verifyIdToken,
} from './helpers.mjs';

let passed = 0;
let failed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed += 1;
    console.log(`ok   - ${name}`);
  } catch (err) {
    failed += 1;
    console.log(`FAIL - ${name}: ${err.stack ?? err}`);
    throw err;
  }
}
function assert(cond, msg) { if (!cond) throw new Error(msg); }
const eq = (a, b, what) => assert(JSON.stringify(a) === JSON.stringify(b), `${what}: got ${JSON.stringify(a)}, want ${JSON.stringify(b)}`);

const alice = ACCOUNTS[0];
const screenshots = join(HERE, 'screenshots'); // gitignored; Playwright's runner uses screenshots/playwright/
mkdirSync(screenshots, { recursive: true });

const cb = await startCallbackServer();
let provider;
let browser;
try {
  provider = await startProvider({
    clients: [{ ...CLIENT, redirect_uris: [cb.redirectUri], post_logout_redirect_uris: [`${cb.base}/`] }],
  });
  const { issuer } = provider;
  let discovery;

  await check('discovery document lists the endpoints, S256, scopes and claims', async () => {
    discovery = await fetchDiscovery(issuer);
    eq(discovery.issuer, issuer, 'issuer');
    for (const [key, path] of [['authorization_endpoint', '/auth'], ['token_endpoint', '/token'], ['jwks_uri', '/jwks'],
      ['userinfo_endpoint', '/me'], ['end_session_endpoint', '/session/end']]) {
      eq(discovery[key], `${issuer}${path}`, key);
    }
    eq(discovery.code_challenge_methods_supported, ['S256'], 'code_challenge_methods_supported');
    eq(discovery.response_types_supported, ['code'], 'response_types_supported');
    for (const s of ['openid', 'email', 'profile', 'groups']) assert(discovery.scopes_supported.includes(s), `scope ${s} missing`);
    for (const c of ['sub', 'email', 'name', 'groups']) assert(discovery.claims_supported.includes(c), `claim ${c} missing`);
  });

  await check('an authorization request without PKCE is refused', async () => {
    const url = new URL(authorizationRequest(discovery, { redirectUri: cb.redirectUri }).url);
    url.searchParams.delete('code_challenge');
    url.searchParams.delete('code_challenge_method');
    const res = await fetch(url, { redirect: 'manual' });
    const location = new URL(res.headers.get('location') ?? 'http://none/', issuer);
    eq(location.searchParams.get('error'), 'invalid_request', 'error');
    assert(/PKCE/.test(location.searchParams.get('error_description')), `error_description: ${location.searchParams.get('error_description')}`);
  });

  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  const context = await browser.newContext();
  const page = await context.newPage();
  const req = authorizationRequest(discovery, { redirectUri: cb.redirectUri });

  await check('the authorization URL shows a login form in Chromium', async () => {
    await page.goto(req.url);
    assert(new URL(page.url()).pathname.startsWith('/interaction/'), `not on the login page: ${page.url()}`);
    eq(await page.title(), 'Sign in – nmc test identity provider', 'title');
    await page.screenshot({ path: join(screenshots, 'smoke-login.png') });
  });

  await check('axe: no serious or critical violations on the login page', async () => {
    const { violations } = await new AxeBuilder({ page }).analyze();
    console.log(`     axe violations (all impacts): ${JSON.stringify(summarizeViolations(violations))}`);
    const bad = violations.filter(isSerious);
    assert(bad.length === 0, `serious/critical: ${JSON.stringify(summarizeViolations(bad))}`);
  });

  await check('a wrong password is refused', async () => {
    await signIn(page, alice.sub, 'not-the-password');
    await page.getByRole('alert').filter({ hasText: 'Invalid login or password.' }).waitFor();
    assert(new URL(page.url()).pathname.startsWith('/interaction/'), `left the login page: ${page.url()}`);
    eq(cb.hits.length, 0, 'callback hits');
    const { violations } = await new AxeBuilder({ page }).analyze();
    const bad = violations.filter(isSerious);
    assert(bad.length === 0, `axe on the error state: ${JSON.stringify(summarizeViolations(bad))}`);
  });

  let code;
  await check('the right password redirects to redirect_uri with a code and the same state', async () => {
    await signIn(page, alice.sub, alice.password);
    await page.waitForURL((u) => u.href.startsWith(cb.redirectUri));
    const url = new URL(page.url());
    eq(url.searchParams.get('state'), req.state, 'state');
    eq(url.searchParams.get('iss'), issuer, 'iss'); // RFC 9207 authorization response issuer
    code = url.searchParams.get('code');
    assert(code, 'no code in the redirect');
    eq(cb.hits.length, 1, 'callback hits');
  });

  let tokens;
  await check('the code + code_verifier give an ID token with sub, email, name, groups and nonce', async () => {
    const { status, body } = await exchangeCode(discovery, { code, verifier: req.verifier, redirectUri: cb.redirectUri });
    eq(status, 200, `token endpoint status (${JSON.stringify(body)})`);
    tokens = body;
    eq(tokens.token_type, 'Bearer', 'token_type');
    const claims = await verifyIdToken(discovery, tokens.id_token);
    console.log(`     ID token claims: ${JSON.stringify(claims)}`);
    eq(claims.iss, issuer, 'iss');
    eq(claims.aud, CLIENT.client_id, 'aud');
    eq(claims.sub, alice.sub, 'sub');
    eq(claims.email, alice.email, 'email');
    eq(claims.name, alice.name, 'name');
    eq(claims.groups, alice.groups, 'groups');
    eq(claims.nonce, req.nonce, 'nonce');
  });

  const userinfo = () => fetch(discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${tokens.access_token}` } });
  await check('userinfo answers for the access token', async () => {
    const info = await (await userinfo()).json();
    eq([info.sub, info.email, info.groups], [alice.sub, alice.email, alice.groups], 'userinfo');
  });

  await check('a replayed code is refused and revokes the tokens issued from it', async () => {
    const again = await exchangeCode(discovery, { code, verifier: req.verifier, redirectUri: cb.redirectUri });
    eq([again.status, again.body.error], [400, 'invalid_grant'], 'second exchange');
    eq((await userinfo()).status, 401, 'userinfo status after the replay');
  });

  await check('a wrong code_verifier is refused (signed-in session: no login form this time)', async () => {
    const second = authorizationRequest(discovery, { redirectUri: cb.redirectUri });
    await page.goto(second.url);
    await page.waitForURL((u) => u.href.startsWith(cb.redirectUri));
    const url = new URL(page.url());
    eq(url.searchParams.get('state'), second.state, 'state');
    const res = await exchangeCode(discovery, { code: url.searchParams.get('code'), verifier: req.verifier, redirectUri: cb.redirectUri });
    eq([res.status, res.body.error], [400, 'invalid_grant'], 'exchange with the wrong verifier');
  });

  await check('RP-initiated logout: confirm page (axe-clean), then post_logout_redirect_uri with state', async () => {
    const url = new URL(discovery.end_session_endpoint);
    url.search = new URLSearchParams({ id_token_hint: tokens.id_token, post_logout_redirect_uri: `${cb.base}/`, state: 'bye' }).toString();
    await page.goto(url.href);
    const { violations } = await new AxeBuilder({ page }).analyze();
    assert(violations.filter(isSerious).length === 0, `axe on the logout page: ${JSON.stringify(summarizeViolations(violations))}`);
    await page.getByRole('button', { name: 'Yes, sign me out' }).click();
    await page.waitForURL((u) => u.href.startsWith(`${cb.base}/?`));
    eq(new URL(page.url()).searchParams.get('state'), 'bye', 'state');
    // Signed out: a new authorization request shows the login form again.
    await page.goto(authorizationRequest(discovery, { redirectUri: cb.redirectUri }).url);
    await page.getByLabel('Password').waitFor();
  });

  await check('"Cancel" on the login page returns error=access_denied with the state', async () => {
    const fresh = await browser.newContext();
    const p2 = await fresh.newPage();
    const r = authorizationRequest(discovery, { redirectUri: cb.redirectUri });
    await p2.goto(r.url);
    await p2.getByRole('link', { name: 'Cancel' }).click();
    await p2.waitForURL((u) => u.href.startsWith(cb.redirectUri));
    const url = new URL(p2.url());
    eq([url.searchParams.get('error'), url.searchParams.get('state')], ['access_denied', r.state], 'error, state');
    await fresh.close();
  });

  await check('the provider exits 0 on SIGTERM', async () => {
    const p = provider;
    provider = undefined;
    eq(await p.stop(), 0, 'exit code');
  });
} catch (err) {
  // A failed check() has already been reported; anything else is a set-up error.
  if (failed === 0) {
    failed = 1;
    console.log(`FAIL - set-up: ${err.stack ?? err}`);
  }
} finally {
  await browser?.close();
  if (provider) {
    const stderr = provider.stderr();
    await provider.stop();
    if (failed) console.log(`provider stderr:\n${stderr}`);
  }
  await cb.close();
}
console.log(`smoke: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
