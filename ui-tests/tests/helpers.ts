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
 * Check the sidebar with axe-core: WCAG AA text contrast (4.5:1) must hold in the state it is
 * in. Disabled controls are exempt (WCAG's rule; axe skips them too).
 */
export async function expectReadable(
  page: IJupyterLabPageFixture,
  testInfo: TestInfo,
  state: string
): Promise<void> {
  const results = await new AxeBuilder({ page })
    .include('#jupyter-modelsave-sidebar')
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
}
