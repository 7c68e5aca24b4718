import { expect, test } from '@jupyterlab/galata';
import type { Locator } from '@playwright/test';

import {
  expectReadable,
  modelButton,
  openSidebar,
  snapshot,
  uploadFixture
} from './helpers';

/**
 * A Keras model in the sidebar: listed with its framework and declared input, offered only the
 * formats that apply to it, staged as a SavedModel with a dynamic batch, written.
 */

const NOTEBOOK = 'keras_models.ipynb';

async function formatChoices(form: Locator): Promise<string[]> {
  return form.getByLabel('Format').locator('option').allInnerTexts();
}

/** The opset choices: "default", then the highest to the lowest. */
async function opsetChoices(form: Locator): Promise<string[]> {
  return form.getByLabel('Opset').locator('option').allInnerTexts();
}

test.describe('Model Save sidebar: Keras', () => {
  test.beforeEach(async ({ page, tmpPath }) => {
    await uploadFixture(page, tmpPath, NOTEBOOK);
  });

  test('lists a Keras model, offers its formats, stages and writes a SavedModel', async ({
    page,
    tmpPath
  }, testInfo) => {
    test.setTimeout(180_000);
    await page.notebook.openByPath(`${tmpPath}/${NOTEBOOK}`);
    await page.notebook.activate(NOTEBOOK);
    const sidebar = await openSidebar(page);
    await page.notebook.runCell(1);

    // The list shows each model's framework; the Keras one its declared input.
    await expect(modelButton(sidebar, 'kcnn')).toContainText('Keras', {
      timeout: 60_000
    });
    await expect(modelButton(sidebar, 'kcnn')).toContainText(
      'declared input [2, 8, 8, 3]'
    );
    await expect(modelButton(sidebar, 'mlp')).toContainText('PyTorch');

    // The PyTorch model offers the torch formats, the Keras model its own.
    const form = sidebar.getByRole('form', { name: 'Export options' });
    await modelButton(sidebar, 'mlp').click();
    expect(await formatChoices(form)).toContain('safetensors');
    const torchOpsets = await opsetChoices(form);
    await modelButton(sidebar, 'kcnn').click();
    await expect(modelButton(sidebar, 'kcnn')).toHaveAttribute(
      'aria-pressed',
      'true'
    );
    expect(await formatChoices(form)).toEqual([
      'onnx',
      'savedmodel',
      'keras',
      'weights'
    ]);
    await expect(form.getByLabel('Exporter')).toHaveCount(0);
    await expect(form.getByLabel('Opset')).toBeVisible();
    // Keras ONNX offers tf2onnx's opsets (the format's capabilities), not PyTorch's
    const kerasOpsets = await opsetChoices(form);
    expect(kerasOpsets).not.toEqual(torchOpsets);
    await expect(
      form.getByText(`This kernel supports ${kerasOpsets[kerasOpsets.length - 1]} to ${kerasOpsets[1]}`)
    ).toBeVisible();

    // SavedModel with a dynamic batch dimension.
    await form.getByLabel('Format').selectOption('savedmodel');
    await form.getByRole('checkbox', { name: 'image dim 0 (2)' }).check();
    await snapshot(page, testInfo, 'keras-1-options');
    await form.getByRole('button', { name: 'Stage' }).click();
    const review = sidebar.getByRole('region', { name: 'Staged export' });
    await expect(review.getByText(/^Parity passed on \d+ probes$/)).toBeVisible(
      { timeout: 120_000 }
    );
    await expect(review.getByRole('list', { name: 'Probes' })).toContainText(
      'batch'
    );
    await snapshot(page, testInfo, 'keras-2-review');
    await expectReadable(page, testInfo, 'light keras review');

    // The staged SavedModel (a folder) downloads as one zip.
    const staged = page.waitForEvent('download');
    await review.getByRole('button', { name: 'Download', exact: true }).click();
    const stagedZip = await staged;
    expect(stagedZip.suggestedFilename()).toBe('kcnn.savedmodel.zip');
    expect(await stagedZip.failure()).toBeNull();

    await review.getByRole('button', { name: 'Write' }).click();
    const written = review
      .getByRole('status')
      .filter({ hasText: 'Written to' });
    await expect(written).toContainText(
      new RegExp(`${tmpPath}/exports/kcnn_v1\\.0\\.0_[0-9a-f]{12}\\.savedmodel`)
    );
    const relative = (await written.locator('code').innerText()).trim();
    expect(await page.contents.directoryExists(relative)).toBe(true);
    expect(await page.contents.fileExists(`${relative}.json`)).toBe(true);
    await snapshot(page, testInfo, 'keras-3-written');

    // So does the written one, under its versioned name.
    const download = page.waitForEvent('download');
    await written.getByRole('button', { name: 'Download file' }).click();
    const writtenZip = await download;
    expect(writtenZip.suggestedFilename()).toBe(
      `${relative.split('/').pop()}.zip`
    );
    expect(await writtenZip.failure()).toBeNull();
    await review.getByRole('button', { name: 'Done' }).click();
  });
});
