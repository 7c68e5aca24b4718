import { expect, test } from '@jupyterlab/galata';

import {
  modelButton,
  openFixture,
  snapshot,
  uploadFixture
} from './helpers';

/**
 * The release check in the sidebar's review: precision, latency and the diff against the
 * previous version in the destination folder, and the precision variants it offers.
 */

const NOTEBOOK = 'sidebar_models.ipynb';

test.describe('Model Save sidebar: release check', () => {
  test.beforeEach(async ({ page, tmpPath }) => {
    await uploadFixture(page, tmpPath, NOTEBOOK);
  });

  test('shows precision, latency and the diff before Write, and stages a variant', async ({
    page,
    tmpPath
  }, testInfo) => {
    test.setTimeout(180_000);
    const sidebar = await openFixture(page, tmpPath, NOTEBOOK);
    await expect(modelButton(sidebar, 'cnn')).toContainText('SmallCNN'); // listed: recording
    await page.notebook.runCell(2);
    await expect(modelButton(sidebar, 'cnn')).toContainText('last input');
    await modelButton(sidebar, 'cnn').click();

    // The form offers the precisions this kernel takes for ONNX.
    const form = sidebar.getByRole('form', { name: 'Export options' });
    const precision = form.getByLabel('Precision');
    await expect(precision.locator('option')).toContainText([
      'model’s own (fp32)',
      'fp16',
      'int8'
    ]);

    // Stage fp32: its own precision, a measured latency, no earlier version yet; write it.
    await form.getByRole('button', { name: 'Stage' }).click();
    const review = sidebar.getByRole('region', { name: 'Staged export' });
    await expect(review.getByText(/^Parity passed on \d+ probes$/)).toBeVisible(
      { timeout: 120_000 }
    );
    const release = review.getByRole('region', { name: 'Release check' });
    await expect(release).toContainText('fp32 (the model’s own)');
    await expect(release.getByLabel('Latency')).toContainText(
      /p50 .* ms · p95 .* ms \(onnxruntime CPUExecutionProvider\) · eager p50/
    );
    const diff = review.getByRole('region', {
      name: 'Against the previous version'
    });
    await expect(diff).toContainText('No earlier version of cnn');
    await review.getByRole('button', { name: 'Write' }).click();
    await expect(
      review.getByRole('status').filter({ hasText: 'Written to' })
    ).toContainText('cnn_v1.0.0_');

    // Stage the fp16 variant from the review: it is compared with version 1.0.0 before Write.
    await release.getByRole('group', { name: 'Variants' }).getByRole('button', {
      name: 'fp16'
    }).click();
    await expect(review.getByText(/^Parity passed on \d+ probes$/)).toBeVisible(
      { timeout: 120_000 }
    );
    await expect(release).toContainText('fp16 (from fp32)');
    await expect(release).toContainText('× the fp32 size');
    await expect(release).toContainText(/output: top-1 \d+\.\d%/);
    await expect(diff).toContainText('version 1.0.0', { timeout: 60_000 });
    await expect(diff).toContainText('changed: precision');
    const warnings = diff.getByRole('alert', { name: 'Changes to check' });
    await expect(warnings).toContainText(
      "precision changed since version 1.0.0: 'fp32' -> 'fp16'"
    );
    await snapshot(page, testInfo, 'release-fp16-light');

    // Another folder holds no earlier version.
    await review.getByLabel('Folder').fill(`${tmpPath}/elsewhere`);
    await expect(diff).toContainText('No earlier version of cnn');
    await review.getByLabel('Folder').fill(`${tmpPath}/exports`);
    await expect(diff).toContainText('version 1.0.0');

    // Write records the diff in the manifest as "previous".
    await review.getByRole('button', { name: 'Write' }).click();
    const written = review.getByRole('status').filter({ hasText: 'Written to' });
    await expect(written).toContainText('cnn_v1.0.1_');
    const relative = (await written.locator('code').innerText()).trim();
    const manifest = await page.request.get(
      `/api/contents/${relative}.json?content=1&type=file&format=text`
    );
    const body = JSON.parse((await manifest.json()).content);
    expect(body.precision).toBe('fp16');
    expect(body.previous.version).toBe('1.0.0');
    expect(body.latency.runs).toBeGreaterThan(0);

    await page.theme.setDarkTheme();
    await snapshot(page, testInfo, 'release-written-dark');
    await page.theme.setLightTheme();
  });
});
