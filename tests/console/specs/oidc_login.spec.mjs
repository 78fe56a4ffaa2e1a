// Example spec: a real OIDC authorization-code + PKCE login in Chromium against oidc_provider.mjs,
// with axe checks of the login page. A console spec would point redirect_uri at `nmc console` instead.
import AxeBuilder from '@axe-core/playwright';
import { expect, test } from '@playwright/test';
import {
  ACCOUNTS, CLIENT, authorizationRequest, exchangeCode, fetchDiscovery, isSerious, signIn,
  startCallbackServer, startProvider, summarizeViolations, verifyIdToken,
} from '../helpers.mjs';

let cb;
let provider;
let discovery;

test.beforeAll(async () => {
  cb = await startCallbackServer();
  provider = await startProvider({ clients: [{ ...CLIENT, redirect_uris: [cb.redirectUri] }] });
  discovery = await fetchDiscovery(provider.issuer);
});

test.afterAll(async () => {
  if (provider) expect(await provider.stop()).toBe(0); // clean exit on SIGTERM
  await cb?.close();
});

test('login page has no serious or critical axe violations', async ({ page }, testInfo) => {
  await page.goto(authorizationRequest(discovery, { redirectUri: cb.redirectUri }).url);
  await expect(page.getByRole('heading', { name: 'Sign in' })).toBeVisible();
  const results = await new AxeBuilder({ page }).analyze();
  await testInfo.attach('axe-results.json', { body: JSON.stringify(results.violations, null, 2), contentType: 'application/json' });
  console.log('axe violations:', JSON.stringify(summarizeViolations(results.violations)));
  expect(summarizeViolations(results.violations.filter(isSerious))).toEqual([]);
});

test('authorization code + PKCE login yields an ID token with groups', async ({ page }) => {
  const alice = ACCOUNTS[0];
  const req = authorizationRequest(discovery, { redirectUri: cb.redirectUri });
  await page.goto(req.url);

  await signIn(page, alice.sub, 'wrong-password');
  await expect(page.getByRole('alert')).toHaveText('Invalid login or password.');
  await expect(page).toHaveURL(/\/interaction\//);

  await signIn(page, alice.sub, alice.password);
  await page.waitForURL((u) => u.href.startsWith(cb.redirectUri));
  const url = new URL(page.url());
  expect(url.searchParams.get('state')).toBe(req.state);

  const { status, body } = await exchangeCode(discovery, { code: url.searchParams.get('code'), verifier: req.verifier, redirectUri: cb.redirectUri });
  expect(status).toBe(200);
  const claims = await verifyIdToken(discovery, body.id_token);
  expect(claims).toMatchObject({ sub: alice.sub, email: alice.email, name: alice.name, groups: alice.groups, nonce: req.nonce });
});
