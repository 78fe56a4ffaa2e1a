// The nmc console in Chromium, driven by tests/console_browser.rs (which starts NATS, a node that
// raised real alerts, the OpenID Connect provider and the console, and passes their addresses in
// NMC_* variables). Not runnable on its own: `cargo nextest run --test console_browser`.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import AxeBuilder from '@axe-core/playwright';
import { expect, test } from '@playwright/test';
import { HERE, isSerious, signIn, summarizeViolations } from '../helpers.mjs';

const BASE = process.env.NMC_CONSOLE_URL;
const SHOTS = join(HERE, 'screenshots');
mkdirSync(SHOTS, { recursive: true });
test.describe.configure({ mode: 'serial' });
test.skip(!BASE, 'run by tests/console_browser.rs');

async function axe(page, what) {
  const r = await new AxeBuilder({ page }).analyze();
  expect(summarizeViolations(r.violations.filter(isSerious)), `axe on the ${what} page`).toEqual([]);
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `console-${name}.png`), fullPage: true });
}

/** A new browser context signed in through the identity provider, on the overview. */
async function signInAs(browser, login, password) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${BASE}/alerts`);
  await expect(page).toHaveURL(`${BASE}/login`);
  await page.getByRole('link', { name: /Sign in with your organisation/ }).click();
  await signIn(page, login, password);
  await page.waitForURL(`${BASE}/`);
  return { context, page };
}

test('the sign-in page is accessible and keyboard-first', async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${BASE}/login`);
  await page.keyboard.press('Tab');
  await expect(page.locator(':focus')).toHaveText('Skip to content');
  await axe(page, 'sign-in');
  await shot(page, 'login');
  await context.close();
});

test('an analyst works an alert and a second analyst sees it and a new alert live', async ({ browser }) => {
  const alice = await signInAs(browser, 'alice@ncsoc.example', 'alice-pw-1');
  const a = alice.page;
  await expect(a.getByRole('heading', { name: 'National overview' })).toBeVisible();
  await expect(a.locator('tr[data-force="kent"]')).toBeVisible();
  await expect(a.locator('tr[data-force="essex"]')).toBeVisible();
  await expect(a.locator('tr[data-force="kent"] ul.feeds')).toContainText('entra_signin');
  await expect(a.locator('tr[data-force="kent"] ul.levels')).toBeVisible();
  await axe(a, 'overview');
  await shot(a, 'overview');

  const bob = await signInAs(browser, 'bob@ncsoc.example', 'bob-pw-1');
  const b = bob.page;
  await b.getByRole('link', { name: 'Alerts' }).click();
  await b.getByLabel('Force').selectOption('kent');
  await b.getByRole('button', { name: 'Filter' }).click();
  await expect(b).toHaveURL(/force=kent/);
  await axe(b, 'queue');
  await shot(b, 'queue');

  await a.goto(`${BASE}/alerts?force=kent`);
  const first = a.locator('#rows tr[data-alert]').first();
  const id = await first.getAttribute('data-alert');
  await first.getByRole('link').click();
  await expect(a).toHaveURL(`${BASE}/alerts/${id}`);
  await expect(a.getByRole('heading', { name: 'Evidence' })).toBeVisible();
  await expect(a.locator('table.fields tr.matched').first()).toBeVisible();
  await expect(a.locator('#state')).toHaveText('new');
  await axe(a, 'alert');
  await shot(a, 'alert');

  await a.getByLabel('Note (optional)').first().fill('Looking into it');
  await a.getByRole('button', { name: 'Acknowledge' }).click();
  await expect(a.locator('#state')).toHaveText('acknowledged');
  await expect(a.getByRole('cell', { name: 'Looking into it' })).toBeVisible();
  // Bob's queue was not reloaded: the change arrives over the live stream.
  await expect(b.locator(`tr[data-alert="${id}"]`)).toContainText('acknowledged', { timeout: 5000 });

  // A new alert appears in Bob's queue within 2 seconds of being raised, without a reload.
  const asked = Date.now();
  writeFileSync(process.env.NMC_TRIGGER, 'publish');
  await expect(b.locator(`tr[data-alert="${process.env.NMC_NEW_ALERT}"]`)).toBeVisible({ timeout: 2000 });
  console.log(`a new alert appeared in the queue ${Date.now() - asked} ms after it was asked for`);
  await expect(b.locator('#live')).toContainText('new alert');
  await alice.context.close();
  await bob.context.close();
});

test("a force's contact sees only that force's alerts, through every page", async ({ browser }) => {
  const kent = await signInAs(browser, 'soc@kent.example', 'kent-pw-1');
  const k = kent.page;
  await expect(k.locator('tr[data-force="kent"]')).toBeVisible();
  await expect(k.locator('tr[data-force="essex"]')).toHaveCount(0);
  await k.goto(`${BASE}/alerts`);
  const forces = (await k.locator('#rows tr[data-alert] td:nth-child(3)').allTextContents()).map((s) => s.trim());
  expect(forces.length).toBeGreaterThan(0);
  expect([...new Set(forces)]).toEqual(['kent']);
  await k.goto(`${BASE}/alerts?force=essex`);
  await expect(k.getByText('No alert matches.')).toBeVisible();
  const essex = process.env.NMC_ESSEX_ALERT;
  expect((await k.goto(`${BASE}/alerts/${essex}`)).status()).toBe(404);
  await expect(k.getByRole('heading', { name: 'No such alert' })).toBeVisible();
  await axe(k, 'not found');
  expect((await k.request.get(`${BASE}/api/alerts/${essex}/evidence`)).status()).toBe(404);
  expect((await k.goto(`${BASE}/admin`)).status()).toBe(403);
  await k.goto(`${BASE}/rules`);
  await expect(k.getByRole('heading', { name: 'Rules' })).toBeVisible();
  await expect(k.getByText(/Pack in force/)).toBeVisible();
  await axe(k, 'rules');
  await shot(k, 'rules');
  await kent.context.close();
});

test('an administrator onboards a force and adds its contact', async ({ browser }) => {
  const ada = await signInAs(browser, 'ada@ncsoc.example', 'ada-pw-1');
  const p = ada.page;
  await p.getByRole('link', { name: 'Administration' }).click();
  await p.getByLabel('Force', { exact: true }).selectOption('surrey');
  await p.getByLabel('Phase', { exact: true }).selectOption('cloud');
  await p.getByRole('button', { name: 'Onboard' }).click();
  await expect(p.getByRole('status')).toContainText('Force onboarded');
  await p.getByRole('link', { name: 'Contacts of surrey' }).click();
  await p.getByLabel('Name', { exact: true }).fill('soc-lead');
  await p.getByLabel('Role').fill('SOC lead');
  await p.getByLabel('E-mail').fill('soc-lead@surrey.example');
  await p.getByLabel('From level').selectOption('high');
  await p.getByRole('button', { name: 'Add contact' }).click();
  await expect(p.getByRole('status')).toContainText('Contact saved');
  await expect(p.getByRole('row', { name: /soc-lead/ })).toBeVisible();
  await axe(p, 'administration');
  await shot(p, 'admin');
  await ada.context.close();
});
