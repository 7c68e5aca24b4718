import AxeBuilder from '@axe-core/playwright';
import { expect, IJupyterLabPageFixture } from '@jupyterlab/galata';
import type { Frame, Locator, Page, TestInfo } from '@playwright/test';
import * as path from 'path';

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

/** Upload a notebook of ui-tests/tests/data/ into the test's own server folder. */
export async function uploadFixture(
  page: IJupyterLabPageFixture,
  tmpPath: string,
  notebook: string
): Promise<void> {
  await page.contents.uploadFile(
    path.resolve(__dirname, 'data', notebook),
    `${tmpPath}/${notebook}`
  );
}

/** Open an uploaded notebook and the sidebar, and run the first cell (the model definitions). */
export async function openFixture(
  page: IJupyterLabPageFixture,
  tmpPath: string,
  notebook: string
): Promise<Locator> {
  await page.notebook.openByPath(`${tmpPath}/${notebook}`);
  await page.notebook.activate(notebook);
  const sidebar = await openSidebar(page);
  await page.notebook.runCell(1);
  return sidebar;
}

/** A model's entry in the sidebar's list. */
export function modelButton(sidebar: Locator, name: string): Locator {
  return sidebar
    .getByRole('list', { name: 'Models' })
    .getByRole('button', { name: new RegExp(`^${name}`) });
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

/**
 * Check the sidebar (or `selector`) with axe-core: WCAG AA text contrast (4.5:1) must hold in the state it is
 * in. Disabled controls are exempt (WCAG's rule; axe skips them too).
 */
export async function expectReadable(
  page: IJupyterLabPageFixture,
  testInfo: TestInfo,
  state: string,
  selector = '#jupyter-modelsave-sidebar'
): Promise<void> {
  // JupyterLab's <body> has overflow: hidden and no in-flow content, so its box is 0 px high;
  // axe-core then sees every text as clipped away and checks none (only form fields). Give the
  // body the viewport's height (nothing moves: JupyterLab's shell is absolutely positioned).
  await page.evaluate(() => {
    document.body.style.height = '100vh';
  });
  const results = await new AxeBuilder({ page })
    .include(selector)
    .withRules(['color-contrast'])
    .analyze();
  const problems = results.violations.flatMap(v =>
    v.nodes.map(n => `${state}: ${n.target.join(' ')}: ${n.failureSummary}`)
  );
  await testInfo.attach(`axe ${state}`, {
    body: JSON.stringify(
      { checked: results.passes.flatMap(p => p.nodes).length, problems },
      null,
      2
    ),
    contentType: 'application/json'
  });
  expect(problems).toEqual([]);
  // texts were checked, not only form fields (the emptiest sidebar has a title, a message and a
  // footer)
  const checked = results.passes.flatMap(p => p.nodes).length;
  expect(checked).toBeGreaterThanOrEqual(3);
}
