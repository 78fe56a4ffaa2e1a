// Playwright test runner config for the nmc console browser tests.
//   cd tests/console && npx playwright test        (or: npm test)
// Uses Debian's Chromium (/usr/bin/chromium, or $CHROMIUM_PATH): Playwright's own browser download is not
// reachable from this machine, and nothing here triggers it (`npx playwright install` is never needed).
import { defineConfig } from '@playwright/test';
import { CHROMIUM, CHROMIUM_ARGS } from './helpers.mjs';

// Only consulted by `playwright install` / package installs; set for belt and braces.
process.env.PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD = '1';

export default defineConfig({
  testDir: './specs',
  // Screenshots, traces and failure artefacts go here (gitignored).
  outputDir: './screenshots/playwright',
  // Two cores: keep one worker; the specs start their own provider on free ports anyway.
  workers: 1,
  fullyParallel: false,
  forbidOnly: !!process.env.CI,
  retries: 0,
  timeout: 60_000,
  reporter: [['list']],
  use: {
    browserName: 'chromium',
    headless: true,
    launchOptions: { executablePath: CHROMIUM, args: CHROMIUM_ARGS },
    screenshot: 'only-on-failure',
    trace: 'retain-on-failure',
  },
});
