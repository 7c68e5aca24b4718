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
