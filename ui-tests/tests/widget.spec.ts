import { expect, test } from '@jupyterlab/galata';

import { expectReadable, snapshot, uploadFixture } from './helpers';

const NOTEBOOK = 'widget.ipynb';

test.describe('Model Save widget', () => {
  test.beforeEach(async ({ page, tmpPath }) => {
    // The fixture notebook builds a real model, runs it once and shows jms.widget().
    await uploadFixture(page, tmpPath, NOTEBOOK);
  });

  test('stages, writes and links an export by clicking', async ({
    page,
    tmpPath
  }, testInfo) => {
    test.setTimeout(180_000);
    await page.notebook.openByPath(`${tmpPath}/${NOTEBOOK}`);
    await page.notebook.activate(NOTEBOOK);
    await page.notebook.run();
    await page.sidebar.close('left'); // room for the report table

    const widget = page.locator('.jms-widget');
    await expect(widget).toBeVisible();
    await expect(widget.getByText('input [4, 8] float32')).toBeVisible();
    // one size formatter: the file browser's, not a byte count

    // Make the batch dimension dynamic, then stage.
    await widget.getByRole('checkbox', { name: 'input[0] = 4' }).check();
    await widget.getByRole('button', { name: 'Stage' }).click();
    await expect(widget.getByText(/parity passed on 7 probes/)).toBeVisible({
      timeout: 120_000
    });
    // the report's probes include batch size 4 - 1 = 3, since the batch axis is dynamic
    await expect(widget.getByText('batch=3', { exact: true })).toBeVisible();
    await expect(widget.getByText(/^[0-9a-f]{64}$/)).toBeVisible();
    await expect(widget.locator('table.jms-staged')).toContainText(
      /size\s*\d+(\.\d)? KB/
    );
    await expect(widget.getByRole('button', { name: 'Discard' })).toBeEnabled();
    await widget
      .getByRole('button', { name: 'Stage' })
      .scrollIntoViewIfNeeded();
    await snapshot(page, testInfo, 'widget-staged');
    // The verdict and the report read in both themes (issue 16.5: 3.7:1 in the dark theme)
    await expectReadable(page, testInfo, 'light widget staged', '.jms-widget');
    await page.theme.setDarkTheme();
    await snapshot(page, testInfo, 'widget-staged-dark');
    await expectReadable(page, testInfo, 'dark widget staged', '.jms-widget');
    await page.theme.setLightTheme();

    await widget.getByRole('button', { name: 'Write' }).click();
    const written = widget.getByText(
      /exports\/net_v1\.0\.0_[0-9a-f]{12}\.onnx/
    );
    await expect(written).toBeVisible();
    await expect(widget.getByRole('button', { name: 'Write' })).toBeDisabled();
    const link = widget.getByRole('link', { name: 'show in the file browser' });
    await expect(link).toHaveAttribute('href', `/lab/tree/${tmpPath}/exports`);

    // The artifact and its manifest are on the server, next to the notebook.
    const relative = (await written.innerText()).trim();
    expect(await page.contents.fileExists(`${tmpPath}/${relative}`)).toBe(true);
    expect(await page.contents.fileExists(`${tmpPath}/${relative}.json`)).toBe(
      true
    );

    await widget.getByRole('button', { name: 'Copy as code' }).click();
    await expect(widget.getByRole('textbox').last()).toHaveValue(
      /jms\.export\(net, 'exports\/', dynamic_axes=\{'input': \{0: 'batch'\}\}\)/
    );

    await written.scrollIntoViewIfNeeded();
    await snapshot(page, testInfo, 'widget-written');
  });
});
