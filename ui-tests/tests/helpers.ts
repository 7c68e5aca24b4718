import AxeBuilder from '@axe-core/playwright';
import { expect, IJupyterLabPageFixture } from '@jupyterlab/galata';
import type { Locator, TestInfo } from '@playwright/test';

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
