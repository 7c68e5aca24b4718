import { expect, IJupyterLabPageFixture } from '@jupyterlab/galata';
import type { Frame, Locator, Page, TestInfo } from '@playwright/test';

/** The sidebar's tab in JupyterLab's left side bar. */
export function sidebarTab(page: IJupyterLabPageFixture): Locator {
  return page
    .getByRole('tablist', { name: 'main sidebar' })
    .getByRole('tab', { name: 'Model Save' });
}

/** Open the sidebar through its tab (unless it is open) and return its region. */
export async function openSidebar(
  page: IJupyterLabPageFixture
): Promise<Locator> {
  const tab = sidebarTab(page);
  if ((await tab.getAttribute('aria-selected')) !== 'true') {
    await tab.click();
  }
  const region = page.getByRole('region', { name: 'Model Save' });
  await expect(region).toBeVisible();
  return region;
}

/** Attach a screenshot to the report and keep a PNG under test-results/. */
export async function snapshot(
  page: IJupyterLabPageFixture,
  testInfo: TestInfo,
  name: string
): Promise<void> {
  const body = await page.screenshot({
    path: testInfo.outputPath(`${name}.png`)
  });
  await testInfo.attach(name, { body, contentType: 'image/png' });
}

/** Netron replaces window.eval with a thrower; Playwright's helpers need it. */
export async function keepEval(
  page: Pick<Page, 'addInitScript'>
): Promise<void> {
  await page.addInitScript(() => {
    const original = window.eval;
    Object.defineProperty(window, 'eval', {
      get: () => original,
      set: () => {
        // Netron's replacement is ignored
      },
      configurable: false
    });
  });
}

/**
 * Record every Content-Security-Policy violation in every frame of `page` (as
 * `window.__cspViolations`: "<directive> <blocked URL>"), from before any page script runs.
 */
export async function recordCspViolations(
  page: Pick<Page, 'addInitScript'>
): Promise<void> {
  await page.addInitScript(() => {
    const seen: string[] = [];
    (window as any).__cspViolations = seen;
    document.addEventListener('securitypolicyviolation', event => {
      seen.push(`${event.effectiveDirective} ${event.blockedURI}`);
    });
  });
}

/** The violations recorded in `frame` (see `recordCspViolations`). */
export async function cspViolations(frame: Frame | Page): Promise<string[]> {
  return frame.evaluate(() => (window as any).__cspViolations ?? ['not recorded']);
}
