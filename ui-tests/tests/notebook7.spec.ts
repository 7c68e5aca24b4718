import { expect, test } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

/** The second test server of playwright.config.js. */
const NOTEBOOK7_URL = 'http://localhost:8890';

/**
 * Beyond JupyterLab (issue 16.8): the `%modelsave` magic and the `jms.widget()` widget in
 * Notebook 7 (`jupyter notebook`, a second test server). The sidebar is JupyterLab's only.
 */

const NOTEBOOK = 'notebook7.ipynb';

test.describe('Notebook 7', () => {
  test.use({ baseURL: NOTEBOOK7_URL, viewport: { width: 1280, height: 900 } });

  test('the magic and the widget stage, check and write a model', async ({
    page,
    request
  }, testInfo) => {
    test.setTimeout(240_000);
    // Given the fixture notebook on the Notebook 7 server (no token in the test config)
    const folder = `nb7-${Date.now()}`;
    await request.put(`/api/contents/${folder}`, {
      data: { type: 'directory' }
    });
    const content = JSON.parse(
      fs.readFileSync(path.resolve(__dirname, 'data', NOTEBOOK), 'utf-8')
    );
    const put = await request.put(`/api/contents/${folder}/${NOTEBOOK}`, {
      data: { type: 'notebook', format: 'json', content }
    });
    expect(put.ok()).toBe(true);

    // When it is opened in Notebook 7 and every cell is run
    await page.goto(`/notebooks/${folder}/${NOTEBOOK}`);
    await expect(page.locator('.jp-Notebook')).toBeVisible({ timeout: 60_000 });
    await page.evaluate(async () => {
      const app = (window as any).jupyterapp;
      await app.shell.currentWidget.sessionContext.ready;
      await app.commands.execute('notebook:run-all-cells');
    });

    // Then the magic lists the model with its recorded input, and exports it
    const table = page.locator('table.jms-models');
    await expect(table).toBeVisible({ timeout: 120_000 });
    await expect(table).toContainText('input: [4, 8] float32');
    await expect(
      page.getByText(/^Wrote exports\/net_v1\.0\.0_[0-9a-f]{12}\.onnx/m)
    ).toBeVisible({
      timeout: 120_000
    });

    // And the widget renders, stages and writes by clicking
    const widget = page.locator('.jms-widget');
    await expect(widget).toBeVisible({ timeout: 60_000 });
    await expect(widget.getByText('input [4, 8] float32')).toBeVisible();
    await widget.getByRole('button', { name: 'Stage' }).click();
    await expect(widget.getByText(/parity passed on \d+ probes/)).toBeVisible({
      timeout: 120_000
    });
    await widget.getByRole('button', { name: 'Write' }).click();
    await expect(
      widget.getByText(/widget-exports\/net_v1\.0\.0_[0-9a-f]{12}\.onnx/)
    ).toBeVisible();
    const body = await page.screenshot({
      path: testInfo.outputPath('notebook7.png'),
      fullPage: true
    });
    await testInfo.attach('notebook7', { body, contentType: 'image/png' });

    // The written files are on the server
    const listing = await (
      await request.get(`/api/contents/${folder}/exports`)
    ).json();
    expect(
      listing.content.filter((f: any) => f.name.endsWith('.onnx')).length
    ).toBe(1);
  });
});
