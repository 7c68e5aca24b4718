import { expect, test } from '@jupyterlab/galata';

import {
  modelButton,
  openSidebar,
  snapshot,
  uploadFixture
} from './helpers';

/**
 * A transformers language model in the sidebar: "For generation (with cache)" is offered for it
 * (not for BERT), and staging with it shows the greedy tokens of generate() and of the artifact.
 */

const NOTEBOOK = 'generation_models.ipynb';
const CHECKBOX = 'For generation (with cache)';

test.describe('Model Save sidebar: generation', () => {
  test.beforeEach(async ({ page, tmpPath }) => {
    await uploadFixture(page, tmpPath, NOTEBOOK);
  });

  test('offers generation for a language model and shows the greedy tokens', async ({
    page,
    tmpPath
  }, testInfo) => {
    test.setTimeout(240_000);
    await page.notebook.openByPath(`${tmpPath}/${NOTEBOOK}`);
    await page.notebook.activate(NOTEBOOK);
    const sidebar = await openSidebar(page);
    await page.notebook.runCell(1);
    await expect(modelButton(sidebar, 'lm')).toBeVisible({ timeout: 90_000 });
    const form = sidebar.getByRole('form', { name: 'Export options' });

    // BERT cannot generate: no checkbox. The language model, for ONNX: offered.
    await modelButton(sidebar, 'bert').click();
    await expect(form.getByRole('checkbox', { name: CHECKBOX })).toHaveCount(0);
    await modelButton(sidebar, 'lm').click();
    await expect(modelButton(sidebar, 'lm')).toHaveAttribute('aria-pressed', 'true');
    const generation = form.getByRole('checkbox', { name: CHECKBOX });
    await expect(generation).toBeVisible();
    await generation.check();
    await expect(form.getByRole('group', { name: 'Dynamic axes' })).toHaveCount(
      0
    );
    await form.getByRole('radio', { name: 'Expression' }).check();
    await form.getByLabel('Example input expression').fill('prompt');
    await snapshot(page, testInfo, 'generation-1-options');

    // Staged: parity passed, and the greedy runs show both token sequences.
    await form.getByRole('button', { name: 'Stage' }).click();
    const review = sidebar.getByRole('region', { name: 'Staged export' });
    await expect(review.getByText(/^Parity passed on \d+ probes$/)).toBeVisible(
      { timeout: 180_000 }
    );
    const greedy = review.getByRole('table', { name: 'Greedy generation' });
    await expect(greedy).toBeVisible();
    await expect(greedy.getByRole('row')).toHaveCount(5); // header + 2 runs x 2 rows
    const first = greedy.getByRole('row').nth(1).getByRole('cell');
    expect(await first.nth(0).innerText()).toBe(await first.nth(1).innerText());
    await greedy.scrollIntoViewIfNeeded();
    await snapshot(page, testInfo, 'generation-2-review');
    await review.getByRole('button', { name: 'Discard' }).click();
  });
});
