import { expect, test } from '@jupyterlab/galata';
import * as fs from 'fs';
import * as path from 'path';

import {
  cspViolations,
  expectReadable,
  keepEval,
  modelButton,
  openFixture,
  openSidebar,
  recordCspViolations,
  snapshot,
  uploadFixture
} from './helpers';

/**
 * The sidebar's export flow against the real server and a real ipykernel: models, options,
 * stage, parity, Netron graph, write, discard.
 */

const NOTEBOOK = 'sidebar_models.ipynb';

test.describe('Model Save sidebar: export', () => {
  test.beforeEach(async ({ page, tmpPath }) => {
    await uploadFixture(page, tmpPath, NOTEBOOK);
  });

  test('stages a CNN with a dynamic batch, shows parity and the graph, writes it', async ({
    page,
    tmpPath
  }, testInfo) => {
    test.setTimeout(150_000);
    await keepEval(page);
    await recordCspViolations(page);
    const requests: string[] = [];
    page.on('request', request => requests.push(request.url()));

    // Models: listed once defined; their last input appears after the next cell runs them.
    const sidebar = await openFixture(page, tmpPath, NOTEBOOK);
    await expect(modelButton(sidebar, 'cnn')).toContainText('SmallCNN');
    await expect(modelButton(sidebar, 'mlp')).toContainText('Sequential');
    await expect(modelButton(sidebar, 'branchy')).toContainText('Branchy');
    await expect(modelButton(sidebar, 'cnn')).toContainText('no call recorded yet');
    await page.notebook.runCell(2);
    await expect(modelButton(sidebar, 'cnn')).toContainText(
      'last input [2, 3, 16, 16]'
    );

    // Options: pick the CNN, make its batch dimension dynamic, choose opset 18.
    await modelButton(sidebar, 'cnn').click();
    await expect(modelButton(sidebar, 'cnn')).toHaveAttribute('aria-pressed', 'true');
    const form = sidebar.getByRole('form', { name: 'Export options' });
    await form.getByLabel('Opset').selectOption('18');
    await form.getByRole('checkbox', { name: 'image dim 0 (2)' }).check();
    await expect(form.getByLabel('Axis name of image dim 0')).toHaveValue(
      'batch'
    );
    // An invalid value is refused in the form with the reason.
    await form.getByLabel('Axis name of image dim 0').fill('2batch');
    await expect(form.getByText('An axis name is an identifier')).toBeVisible();
    await expect(form.getByRole('button', { name: 'Stage' })).toBeDisabled();
    await form.getByLabel('Axis name of image dim 0').fill('batch');
    await snapshot(page, testInfo, '1-options-light');

    // Stage: parity passes on every probe, including another batch size.
    await form.getByRole('button', { name: 'Stage' }).click();
    const review = sidebar.getByRole('region', { name: 'Staged export' });
    await expect(review.getByText(/^Parity passed on \d+ probes$/)).toBeVisible(
      { timeout: 120_000 }
    );
    const table = review.getByRole('table', { name: 'Parity report' });
    await expect(table.getByRole('row', { name: /output/ })).toContainText(
      'pass'
    );
    await expect(review.getByRole('list', { name: 'Probes' })).toContainText(
      'batch'
    );
    await expect(review.getByText(', opset 18')).toBeVisible();
    await expect(review.getByLabel('sha256', { exact: true })).toHaveText(
      /^[0-9a-f]{64}$/
    );
    await snapshot(page, testInfo, '2-review-light');

    // Graph: Netron opens in a main-area tab and draws the model's nodes.
    await review.getByRole('button', { name: 'Graph' }).click();
    const frame = page.frameLocator('.jp-ModelSave-graph iframe');
    await expect(
      frame.locator('g.node', { hasText: 'Conv' }).first()
    ).toBeVisible({ timeout: 60_000 });
    await snapshot(page, testInfo, '3-graph-light');
    const external = requests.filter(
      url =>
        !/^(https?:\/\/(localhost|127\.0\.0\.1)(:\d+)?\/|data:|blob:)/.test(url)
    );
    expect(external).toEqual([]);
    expect(requests.some(url => url.includes('/modelsave/netron/'))).toBe(true);
    // The viewer drew the graph under its Content-Security-Policy without breaking any rule.
    const viewer = page.frames().find(f => f.url().includes('/modelsave/netron/'));
    expect(viewer).toBeDefined();
    expect(await cspViolations(viewer!)).toEqual([]);

    // Write: the artifact lands next to the notebook and shows in the file browser.
    await openSidebar(page);
    await review.getByRole('button', { name: 'Write' }).click();
    const written = review
      .getByRole('status')
      .filter({ hasText: 'Written to' });
    await expect(written).toContainText(
      new RegExp(`${tmpPath}/exports/cnn_v1\\.0\\.0_[0-9a-f]{12}\\.onnx`)
    );
    const relative = (await written.locator('code').innerText()).trim();
    expect(await page.contents.fileExists(relative)).toBe(true);
    expect(await page.contents.fileExists(`${relative}.json`)).toBe(true);
    await page.sidebar.openTab('filebrowser');
    await page.filebrowser.openDirectory(`${tmpPath}/exports`);
    await expect(
      page.locator('.jp-DirListing-item', {
        hasText: path.basename(relative)
      })
    ).toHaveCount(2); // the artifact and its manifest
    await openSidebar(page);
    await snapshot(page, testInfo, '4-written-light');

    await page.theme.setDarkTheme();
    await snapshot(page, testInfo, '5-written-dark');
    await expectReadable(page, testInfo, 'dark written');
    await review.getByRole('button', { name: 'Done' }).click();
    await expect(review).toHaveCount(0);
    await page.theme.setLightTheme();
  });

  test('warns about a data-dependent branch; Discard leaves nothing on disk', async ({
    page,
    tmpPath
  }, testInfo) => {
    test.setTimeout(150_000);
    const sidebar = await openFixture(page, tmpPath, NOTEBOOK);
    await expect(modelButton(sidebar, 'branchy')).toBeVisible();
    await page.notebook.runCell(2);
    await expect(modelButton(sidebar, 'branchy')).toContainText('last input [2, 4]');

    await modelButton(sidebar, 'branchy').click();
    await sidebar.getByRole('button', { name: 'Stage' }).click();
    const review = sidebar.getByRole('region', { name: 'Staged export' });
    await expect(
      review.getByText('Parity FAILED', { exact: true })
    ).toBeVisible({
      timeout: 120_000
    });
    await expect(review.getByRole('alert')).toContainText(
      'data-dependent branch'
    );
    await expect(review.getByRole('button', { name: 'Write' })).toBeDisabled();
    await page.theme.setDarkTheme();
    await snapshot(page, testInfo, '6-failed-dark');
    await page.theme.setLightTheme();
    await snapshot(page, testInfo, '6-failed-light');

    // Discard: the staged files are gone from the staging folder and from the server.
    const id = await review.getAttribute('data-staging-id');
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    const config = await (await page.request.get('/modelsave/config')).json();
    const folder = path.join(config.staging_dir, id!);
    expect(fs.existsSync(folder)).toBe(true);
    await review.getByRole('button', { name: 'Discard' }).click();
    await expect(review).toHaveCount(0);
    await expect.poll(() => fs.existsSync(folder)).toBe(false);
    const gone = await page.request.get(`/modelsave/staged/${id}/artifact`);
    expect(gone.status()).toBe(404);
    expect(await page.contents.directoryExists(`${tmpPath}/exports`)).toBe(
      false
    );
  });

  test.describe('kernel restart', () => {
    // Galata's default `kernels` fixture proxies every POST under /api/kernels and answers 201,
    // also for /api/kernels/<id>/restart, where JupyterLab expects 200: the restart then never
    // leaves "starting". Without the kernels mock the real server answers.
    test.use({ kernels: null });

    test('restart while the sidebar is open recovers the model list', async ({
      page,
      tmpPath
    }, testInfo) => {
      test.setTimeout(120_000);
      const sidebar = await openFixture(page, tmpPath, NOTEBOOK);
      await expect(modelButton(sidebar, 'cnn')).toContainText('SmallCNN');

      await page.menu.clickMenuItem('Kernel>Restart Kernel…');
      await page
        .getByRole('button', { name: 'Confirm Kernel Restart' })
        .click();
      // The new kernel has no models; the sidebar reconnects once it is idle.
      await expect(
        sidebar.getByText('No PyTorch models in this kernel yet')
      ).toBeVisible({ timeout: 60_000 });
      await expect(
        sidebar.getByRole('status', { name: 'Kernel status' })
      ).toHaveText('idle');
      await snapshot(page, testInfo, '7-restarted');
      await expectReadable(page, testInfo, 'light restarted');

      await page.notebook.runCell(1);
      await expect(modelButton(sidebar, 'cnn')).toContainText('SmallCNN');
      await expect(modelButton(sidebar, 'mlp')).toContainText('Sequential');
      await snapshot(page, testInfo, '8-relisted');
    });
  });
});
