// Shared helpers for smoke.mjs and the Playwright specs: start oidc_provider.mjs on a free loopback
// port, a tiny redirect_uri server, PKCE/state/nonce values, the token exchange and ID-token checks.
import { spawn } from 'node:child_process';
import { createHash, createPublicKey, createVerify, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
// Playwright itself adds --no-sandbox (needed as root), --headless, --disable-background-networking,
// --disable-component-update, --disable-sync, --no-first-run. These are extra for this offline machine.
export const CHROMIUM_ARGS = ['--disable-gpu', '--disable-quic'];

export const CLIENT = { client_id: 'nmc-console', client_secret: 'console-test-secret' };
export const ACCOUNTS = [
  { sub: 'alice', email: 'alice@example.test', name: 'Alice Analyst', groups: ['nmc-analyst', 'nmc-force-kent'], password: 'alice-pw-1' },
  { sub: 'root-admin', email: 'admin@example.test', name: 'Ada Admin', groups: ['nmc-admin'], password: 'admin-pw-1' },
];

/** A free TCP port on 127.0.0.1 (bind to 0, read it, close). Racy in theory, fine for tests. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/** Start the redirect_uri target: records every request, answers with a small page. */
export async function startCallbackServer() {
  const hits = [];
  const server = createServer((req, res) => {
    hits.push(new URL(req.url, 'http://127.0.0.1'));
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!DOCTYPE html><html lang="en"><head><title>Callback</title></head><body><main><h1>Callback received</h1></main></body></html>');
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  return { base, redirectUri: `${base}/callback`, hits, close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) };
}

/**
 * Start oidc_provider.mjs as a child process with `clients`/`accounts`, wait for its "ready" line.
 * Returns { issuer, port, stderr(), stop() }; stop() sends SIGTERM and resolves to the exit code.
 */
export async function startProvider({ clients, accounts = ACCOUNTS, timeoutMs = 15000 }) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'nmc-oidc-'));
  const configFile = join(dir, 'config.json');
  writeFileSync(configFile, JSON.stringify({ clients, accounts }, null, 2));
  // stdin is a pipe we never write to: if this process dies, the provider sees it close and exits.
  const child = spawn(process.execPath,
    [join(HERE, 'oidc_provider.mjs'), '--port', String(port), '--config', configFile, '--exit-on-stdin-close'],
    { stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((r) => child.on('exit', (code, signal) => r(code ?? signal)));
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`provider not ready after ${timeoutMs} ms:\n${err}`)), timeoutMs);
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.split('\n').includes('ready')) { clearTimeout(timer); resolve(); }
    });
    exited.then((code) => { clearTimeout(timer); reject(new Error(`provider exited (${code}) before ready:\n${err}`)); });
  });
  return {
    issuer: `http://127.0.0.1:${port}`,
    port,
    stderr: () => err,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const code = await exited;
      rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** Fresh PKCE verifier/challenge (S256), state and nonce, and the authorization URL for them. */
export function authorizationRequest(discovery, { clientId = CLIENT.client_id, redirectUri, scope = 'openid email profile groups' }) {
  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash('sha256').update(verifier).digest());
  const state = b64url(randomBytes(16));
  const nonce = b64url(randomBytes(16));
  const url = new URL(discovery.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: 'code', client_id: clientId, redirect_uri: redirectUri, scope, state, nonce,
    code_challenge: challenge, code_challenge_method: 'S256',
  }).toString();
  return { url: url.href, verifier, challenge, state, nonce };
}

export async function fetchDiscovery(issuer) {
  const res = await fetch(`${issuer}/.well-known/openid-configuration`);
  if (!res.ok) throw new Error(`discovery: HTTP ${res.status}`);
  return res.json();
}

/** Exchange a code at the token endpoint with client_secret_basic; returns { status, body }. */
export async function exchangeCode(discovery, { code, verifier, redirectUri, client = CLIENT }) {
  const basic = Buffer.from(`${encodeURIComponent(client.client_id)}:${encodeURIComponent(client.client_secret)}`).toString('base64');
  const res = await fetch(discovery.token_endpoint, {
    method: 'POST',
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier }),
  });
  return { status: res.status, body: await res.json() };
}

/** Verify an RS256 ID token against the provider's JWKS and return its payload. */
export async function verifyIdToken(discovery, idToken) {
  const [h, p, s] = idToken.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  const { keys } = await (await fetch(discovery.jwks_uri)).json();
  const jwk = keys.find((k) => k.kid === header.kid);
  if (header.alg !== 'RS256' || !jwk) throw new Error(`unexpected ID token header ${JSON.stringify(header)}`);
  const ok = createVerify('RSA-SHA256').update(`${h}.${p}`).verify(createPublicKey({ key: jwk, format: 'jwk' }), Buffer.from(s, 'base64url'));
  if (!ok) throw new Error('ID token signature does not verify');
  return JSON.parse(Buffer.from(p, 'base64url'));
}

/** Fill and submit the provider's login form, finding the fields by their labels. */
export async function signIn(page, login, password) {
  await page.getByLabel('Login').fill(login);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/** axe results reduced to what a failing check should print. */
export const summarizeViolations = (violations) => violations.map((v) => ({
  id: v.id, impact: v.impact, help: v.help, targets: v.nodes.map((n) => n.target.join(' ')),
}));
export const isSerious = (v) => v.impact === 'serious' || v.impact === 'critical';
