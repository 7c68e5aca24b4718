import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import type { Frame, Locator } from '@playwright/test';

import {
  keepEval,
  modelButton,
  openFixture,
  snapshot,
  uploadFixture
} from './helpers';

/**
 * Where the artifact diverges (issue 19): a failing export names its first diverging module and
 * source line in the review, with a per-layer table; "Show in graph" opens Netron with the
 * module's nodes selected and centred. Also pins the private Netron names that
 * `src/netronSelection.ts` uses, so a Netron upgrade fails here.
 */

const NOTEBOOK = 'localize_models.ipynb';
const IF_LINE = 'h = h * 2 if h.mean() > 0 else -h';

async function stageTheBranchyNet(
  page: IJupyterLabPageFixture,
  tmpPath: string
): Promise<Locator> {
  const sidebar = await openFixture(page, tmpPath, NOTEBOOK);
  const net = modelButton(sidebar, 'net');
  await expect(net).toContainText('Net');
  await page.notebook.runCell(2);
  await expect(net).toContainText('last input [4, 8]');
  await net.click();
  await sidebar.getByRole('button', { name: 'Stage' }).click();
  const review = sidebar.getByRole('region', { name: 'Staged export' });
  await expect(review.getByText('Parity FAILED', { exact: true })).toBeVisible({
    timeout: 120_000
  });
  return review;
}

/** The Netron page's frame (the graph tab's iframe). */
function viewerFrame(page: IJupyterLabPageFixture): Frame {
  const frame = page.frames().find(f => f.url().includes('/modelsave/netron/'));
  expect(frame).toBeDefined();
  return frame!;
}

test.describe('Model Save sidebar: where it diverges', () => {
  test.beforeEach(async ({ page, tmpPath }) => {
    await uploadFixture(page, tmpPath, NOTEBOOK);
  });

  test('names the first diverging module and shows its nodes in the graph', async ({
    page,
    tmpPath
  }, testInfo) => {
    test.setTimeout(180_000);
    await keepEval(page);
    const requests: string[] = [];
    page.on('request', request => requests.push(request.url()));
    const review = await stageTheBranchyNet(page, tmpPath);

    // The review names the module, its class and its source line
    const where = review.getByRole('region', { name: 'Where it diverges' });
    await expect(where.getByLabel('Module')).toHaveText('blocks.2');
    await expect(where).toContainText('Block');
    // the class is defined in the notebook's first cell: IPython's own label for it
    await expect(where.getByLabel('Source line')).toHaveText(
      /^Cell In\[1\], line \d+$/
    );
    await expect(where.getByText(IF_LINE, { exact: true })).toBeVisible();
    // and a per-layer table with the diverging row marked
    const table = where.getByRole('table', { name: 'Per-layer comparison' });
    const marked = table.locator('tr[aria-current="true"]');
    await expect(marked).toHaveCount(1);
    await expect(marked.getByRole('rowheader')).toContainText('blocks.2');
    await expect(marked).toBeInViewport(); // the table scrolled to it
    await expect(
      table.getByRole('row', { name: /^blocks\.1 / })
    ).toHaveAttribute('data-passed', 'true');
    await where.scrollIntoViewIfNeeded();
    await snapshot(page, testInfo, '1-diverging-module-light');
    await page.theme.setDarkTheme();
    await snapshot(page, testInfo, '1-diverging-module-dark');
    await page.theme.setLightTheme();

    // "Show in graph": Netron opens with the block's nodes selected, in view
    await where.getByRole('button', { name: 'Show in graph' }).click();
    const frame = page.frameLocator('.jp-ModelSave-graph iframe');
    const selected = frame.locator('g.node.select');
    await expect(selected.first()).toBeVisible({ timeout: 60_000 });
    await expect(selected.filter({ hasText: 'Mul' })).toHaveCount(1);
    expect(await selected.count()).toBeGreaterThanOrEqual(3); // Mul, Gemm, Relu, Add
    await expect(frame.locator('g.node', { hasText: 'Gemm' })).toHaveCount(5);
    // centred: the middle of the selected nodes is the middle of the viewer
    const viewer = await page.locator('.jp-ModelSave-graph iframe').boundingBox();
    const boxes = await Promise.all(
      (await selected.all()).map(node => node.boundingBox())
    );
    const top = Math.min(...boxes.map(b => b!.y));
    const bottom = Math.max(...boxes.map(b => b!.y + b!.height));
    const middle = viewer!.y + viewer!.height / 2;
    expect(Math.abs((top + bottom) / 2 - middle)).toBeLessThan(
      viewer!.height * 0.1
    );
    await snapshot(page, testInfo, '2-show-in-graph-light');
    await page.theme.setDarkTheme();
    await snapshot(page, testInfo, '2-show-in-graph-dark');
    await page.theme.setLightTheme();

    // Selecting drove the viewer from the page: no request left this server
    const external = requests.filter(
      url => !/^(https?:\/\/(localhost|127\.0\.0\.1)(:\d+)?\/|data:|blob:)/.test(url)
    );
    expect(external).toEqual([]);
  });

  test("Netron's private selection API is the one src/netronSelection.ts uses", async ({
    page,
    tmpPath
  }) => {
    test.setTimeout(180_000);
    await keepEval(page);
    const review = await stageTheBranchyNet(page, tmpPath);
    await review.getByRole('button', { name: 'Graph', exact: true }).click();
    await expect(
      page.frameLocator('.jp-ModelSave-graph iframe').locator('g.node').first()
    ).toBeVisible({ timeout: 60_000 });
    const viewer = viewerFrame(page);
    // the viewer sets `_target` once the drawing is done (a moment after the first node shows)
    await expect
      .poll(
        () =>
          viewer.evaluate(() => {
            const view = (window as any).__view__;
            return typeof (view && view._target && view._target.select);
          }),
        { timeout: 30_000 }
      )
      .toBe('function');
    const api = await viewer.evaluate(() => {
      const view = (window as any).__view__;
      const target = view && view._target;
      const table = target && target._table;
      const nodes = table
        ? [...table.keys()].filter(
            (k: any) =>
              k && typeof k.name === 'string' && Array.isArray(k.inputs) && Array.isArray(k.outputs)
          )
        : [];
      return {
        container: !!document.getElementById('target'),
        view: typeof view,
        select: typeof (target && target.select),
        scrollTo: typeof (target && target.scrollTo),
        table: typeof (table && table.keys),
        names: nodes.map((n: any) => n.name)
      };
    });
    expect(api.view).toBe('object');
    expect(api.container).toBe(true); // the element the graph scrolls in
    expect(api.select).toBe('function');
    expect(api.scrollTo).toBe('function');
    expect(api.table).toBe('function');
    // ONNX node names as the kernel reports them (TorchScript's exporter: scope paths)
    expect(api.names).toContain('/blocks.2/Mul');
  });
});
