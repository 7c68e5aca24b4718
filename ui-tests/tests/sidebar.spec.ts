import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import { expectReadable, openSidebar, sidebarTab, snapshot } from './helpers';

const SIDEBAR_ID = 'jupyter-modelsave-sidebar';

/**
 * Run code in the current console through its own API (set the prompt, execute), so the test does
 * not depend on keyboard focus while the console's kernel is still starting.
 */
async function runInConsole(
  page: IJupyterLabPageFixture,
  code: string
): Promise<void> {
  await page.evaluate(async source => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const panel = window.jupyterapp.shell.currentWidget as any;
    await panel.sessionContext.ready;
    panel.console.promptCell.model.sharedModel.setSource(source);
    await panel.console.execute(true);
  }, code);
}

test.describe('Model Save sidebar', () => {
  test('is registered in the left side bar', async ({ page }) => {
    const tab = sidebarTab(page);
    await expect(tab).toBeVisible();
    await expect(tab).toHaveAttribute('data-id', SIDEBAR_ID);
  });

  test('shows an empty state without a notebook', async ({
    page
  }, testInfo) => {
    const region = await openSidebar(page);

    await expect(
      region.getByRole('heading', { name: 'Model Save' })
    ).toBeVisible();
    await expect(
      region.getByText('Open a notebook or console to list its PyTorch models')
    ).toBeVisible();
    await expect(region.getByLabel('Server extension')).toHaveText(
      /^server extension \d+\.\d+\.\d+/
    );
    await snapshot(page, testInfo, 'sidebar-empty');
    await expectReadable(page, testInfo, 'light empty');
    await page.theme.setDarkTheme();
    await expectReadable(page, testInfo, 'dark empty');
    await page.theme.setLightTheme();
  });

  test('follows the kernel of the current notebook', async ({
    page
  }, testInfo) => {
    await page.notebook.createNew('modelsave.ipynb');
    // Run a cell on the real kernel, so that it is started and back to idle.
    await page.notebook.setCell(0, 'code', '1 + 1');
    await page.notebook.runCell(0);
    await expect(page.locator('.jp-OutputArea-output').first()).toHaveText('2');

    const region = await openSidebar(page);
    await expect(
      region.getByRole('heading', { name: 'Model Save' })
    ).toBeVisible();
    await expect(region.getByText('modelsave.ipynb')).toBeVisible();
    await expect(region.getByLabel('Kernel name')).toContainText('Python 3');
    await expect(
      region.getByRole('status', { name: 'Kernel status' })
    ).toHaveText('idle');
    await expect(region.getByLabel('Server extension')).toHaveText(
      /^server extension \d+\.\d+\.\d+/
    );
    await expect(
      region.getByText('Open a notebook or console to list its PyTorch models')
    ).toHaveCount(0);
    await snapshot(page, testInfo, 'sidebar');
    await expectReadable(page, testInfo, 'light no models');

    // Both themes: the sidebar only uses JupyterLab CSS variables.
    await page.theme.setDarkTheme();
    await expect(region).toBeVisible();
    await snapshot(page, testInfo, 'sidebar-dark');
    await expectReadable(page, testInfo, 'dark no models');

    // Closing the notebook brings the empty state back.
    await page.notebook.save();
    await page.notebook.close();
    await expect(
      region.getByText('Open a notebook or console to list its PyTorch models')
    ).toBeVisible();
    await expect(region.getByLabel('Kernel name')).toHaveCount(0);
  });

  test('follows the kernel of the current console', async ({
    page
  }, testInfo) => {
    test.setTimeout(90_000);
    await page.evaluate(async () => {
      await window.jupyterapp.commands.execute('console:create', {
        kernelPreference: { name: 'python3' }
      });
    });
    await runInConsole(
      page,
      'from torch import nn; lin = nn.Linear(4, 2); lin.out_features'
    );
    // A new kernel imports torch first: allow for a slow, busy machine.
    await expect(
      page.locator('.jp-CodeConsole-content .jp-OutputArea-output').last()
    ).toHaveText('2', { timeout: 60_000 });

    const region = await openSidebar(page);
    await expect(region.getByText('Console 1')).toBeVisible();
    await expect(region.getByLabel('Kernel name')).toContainText('Python 3');
    const models = region.getByRole('list', { name: 'Models' });
    const lin = models.getByRole('button', { name: /^lin/ });
    await expect(lin).toContainText('Linear', { timeout: 30_000 });
    await expect(lin).toContainText('10 params');

    // The list refreshes after each execution in the console.
    await runInConsole(page, 'head = nn.Linear(2, 1)');
    await expect(models.getByRole('button', { name: /^head/ })).toContainText(
      'Linear',
      { timeout: 30_000 }
    );
    await snapshot(page, testInfo, 'sidebar-console');
  });
});
