import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import type { Locator, TestInfo } from '@playwright/test';

import {
  expectReadable,
  modelButton,
  snapshot,
  uploadFixture
} from './helpers';

/**
 * Issue 16, as a new user meets it, in both themes at 900 px height: a notebook loads the
 * extension and calls its model before the sidebar is opened; from the tab to a written artifact
 * in at most 5 clicks, without re-running anything; progress, Cancel and errors stay in view;
 * disabled controls look disabled; axe-core finds no contrast violation in any sidebar state.
 */

const NOTEBOOK = 'first_five.ipynb';
const CELL = { loadExt: 1, models: 2, freshCall: 3 };

/** Collect every step the progress bar shows while the test runs. */
async function recordSteps(page: IJupyterLabPageFixture): Promise<void> {
  await page.evaluate(() => {
    const steps: string[] = [];
    (window as any).__jmsSteps = steps;
    new MutationObserver(() => {
      const text = document.querySelector(
        '.jp-ModelSave-progressStep'
      )?.textContent;
      if (text && steps[steps.length - 1] !== text) {
        steps.push(text);
      }
    }).observe(document.body, {
      subtree: true,
      childList: true,
      characterData: true
    });
  });
}

async function style(locator: Locator, property: string): Promise<string> {
  return locator.evaluate(
    (el, prop) => getComputedStyle(el).getPropertyValue(prop),
    property
  );
}

/** Whether the text of `locator`'s last text node sits on one line. */
async function onOneLine(locator: Locator): Promise<boolean> {
  return locator.evaluate(el => {
    const range = document.createRange();
    range.selectNodeContents(el);
    const tops = new Set(
      Array.from(range.getClientRects()).map(r => Math.round(r.top))
    );
    return tops.size === 1;
  });
}

for (const theme of ['light', 'dark'] as const) {
  test.describe(`first five minutes (${theme} theme)`, () => {
    test.use({ viewport: { width: 1280, height: 900 } });

    test.beforeEach(async ({ page, tmpPath }) => {
      await uploadFixture(page, tmpPath, NOTEBOOK);
    });

    test('from the tab to a written artifact in 4 clicks, every state readable', async ({
      page,
      tmpPath,
      context
    }, testInfo) => {
      test.setTimeout(300_000);
      await context.grantPermissions(['clipboard-read', 'clipboard-write']);
      if (theme === 'dark') {
        await page.theme.setDarkTheme();
      }
      const shot = (name: string) =>
        snapshot(page, testInfo, `ff-${theme}-${name}`);

      // The notebook loads the extension and calls its model; the sidebar is not open yet.
      await page.notebook.openByPath(`${tmpPath}/${NOTEBOOK}`);
      await page.notebook.activate(NOTEBOOK);
      await page.notebook.runCell(CELL.loadExt);
      await page.notebook.runCell(CELL.models);
      const table = page.locator('table.jms-models');
      await expect(table).toBeVisible({ timeout: 60_000 });
      const magicSize = await table
        .locator('tr', { hasText: 'Sequential' })
        .first()
        .locator('td')
        .nth(3)
        .innerText();

      let clicks = 0;
      const click = async (target: Locator) => {
        clicks++;
        await target.click();
      };

      // Click 1: the tab. The model's call is known already (no re-run).
      const tab = page
        .getByRole('tablist', { name: 'main sidebar' })
        .getByRole('tab', { name: 'Model Save' });
      await click(tab);
      const sidebar = page.getByRole('region', { name: 'Model Save' });
      const net = modelButton(sidebar, 'net');
      await expect(net).toContainText('last input [2, 3, 32, 32]', {
        timeout: 60_000
      });
      // One size formatter: the sidebar says what the magic's table says.
      await expect(net).toContainText(magicSize);
      await expect(modelButton(sidebar, 'fresh')).toContainText(
        'no call recorded yet'
      );
      await shot('1-list');
      await expectReadable(page, testInfo, `${theme} list`);

      // Click 2: the model. The form is ready to stage; selects show JupyterLab's caret.
      await click(net);
      const form = sidebar.getByRole('form', { name: 'Export options' });
      await expect(form.getByRole('button', { name: 'Stage' })).toBeEnabled();
      const formatSelect = form.locator('.jp-HTMLSelect', {
        has: page.locator('select[id$="-format"]')
      });
      await expect(formatSelect.locator('svg')).toBeVisible();
      // An unticked axis-name field looks disabled; a ticked one does not.
      const axisName = form.getByLabel('Axis name of input dim 0');
      await expect(axisName).toBeDisabled();
      expect(await style(axisName, 'border-top-style')).toBe('dashed');
      expect(await style(axisName, 'cursor')).toBe('not-allowed');
      await form.getByRole('checkbox', { name: 'input dim 0 (2)' }).check();
      await expect(axisName).toBeEnabled();
      expect(await style(axisName, 'border-top-style')).toBe('solid');
      await shot('2-form');
      await expectReadable(page, testInfo, `${theme} form`);

      // Click 3: Stage. Progress and Cancel stay in view; the exporter's own steps show.
      await recordSteps(page);
      await click(form.getByRole('button', { name: 'Stage' }));
      const progress = sidebar.getByRole('group', { name: 'Staging' });
      await expect(progress).toBeVisible();
      await expect(progress).toBeInViewport();
      await expect(
        progress.getByRole('button', { name: 'Cancel' })
      ).toBeInViewport();
      await shot('3-staging');
      await expectReadable(page, testInfo, `${theme} staging`);

      // The review scrolls into view.
      const review = sidebar.getByRole('region', { name: 'Staged export' });
      const verdict = review.getByText(/^Parity passed on \d+ probes$/);
      await expect(verdict).toBeVisible({ timeout: 180_000 });
      await expect(verdict).toBeInViewport();
      const steps: string[] = await page.evaluate(
        () => (window as any).__jmsSteps
      );
      expect(steps).toContain('Staging: export: tracing (torch.export)');
      // The sha256: whole in the DOM, on one line, with a copy button.
      const sha = review.getByLabel('sha256', { exact: true });
      await expect(sha).toHaveText(/^[0-9a-f]{64}$/);
      expect(await onOneLine(sha)).toBe(true);
      await review.getByRole('button', { name: 'Copy the sha256' }).click();
      expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(
        await sha.innerText()
      );
      await shot('4-review');
      await expectReadable(page, testInfo, `${theme} review`);

      // Click 4: Write. The path breaks only between folders.
      await click(review.getByRole('button', { name: 'Write' }));
      const written = review
        .getByRole('status')
        .filter({ hasText: 'Written to' });
      await expect(written).toContainText(
        new RegExp(`${tmpPath}/exports/net_v1\\.0\\.0_[0-9a-f]{12}\\.onnx`)
      );
      expect(clicks).toBeLessThanOrEqual(5);
      const relative = (await written.locator('code').innerText()).trim();
      expect(await page.contents.fileExists(relative)).toBe(true);
      expect(await onOneLine(written.locator('.jp-ModelSave-fileName'))).toBe(
        true
      );
      await expect(
        review.getByRole('button', { name: 'Write' })
      ).toBeDisabled();
      await written.scrollIntoViewIfNeeded();
      await shot('5-written');
      await expectReadable(page, testInfo, `${theme} written`);
      await review.getByRole('button', { name: 'Done' }).click();

      await neverCalledModel(page, sidebar, theme, testInfo);
      await failedParity(page, sidebar, theme, testInfo);
      await failedStage(sidebar, page, theme, testInfo);
      if (theme === 'dark') {
        await page.theme.setLightTheme();
      }
    });
  });
}

/** A model never called: the guess from its first layer; its first call replaces it. */
async function neverCalledModel(
  page: IJupyterLabPageFixture,
  sidebar: Locator,
  theme: string,
  testInfo: TestInfo
): Promise<void> {
  await modelButton(sidebar, 'fresh').click();
  const form = sidebar.getByRole('form', { name: 'Export options' });
  const expression = form.getByLabel('Example input expression');
  await expect(expression).toHaveValue('torch.randn(1, 20)');
  await expect(form.getByText('Guessed from the first layer')).toBeVisible();
  await expect(form.getByRole('button', { name: 'Stage' })).toBeEnabled();
  await expect(
    form.getByRole('checkbox', { name: 'input dim 1 (20)' })
  ).toBeVisible();
  await snapshot(page, testInfo, `ff-${theme}-6-guessed`);
  await expectReadable(page, testInfo, `${theme} guessed`);

  // The notebook calls it: the form switches to the call by itself (no click in the sidebar).
  await page.notebook.runCell(CELL.freshCall);
  await expect(
    form.getByRole('radio', { name: /^Last call \[5, 20\]/ })
  ).toBeChecked({
    timeout: 60_000
  });
  await expect(form.getByLabel('Example input expression')).toHaveCount(0);
  await expect(
    form.getByRole('checkbox', { name: 'input dim 0 (5)' })
  ).toBeVisible();
}

/** A failed parity check: Write looks disabled; the warnings are whole. */
async function failedParity(
  page: IJupyterLabPageFixture,
  sidebar: Locator,
  theme: string,
  testInfo: TestInfo
): Promise<void> {
  await modelButton(sidebar, 'branchy').click();
  const form = sidebar.getByRole('form', { name: 'Export options' });
  await form
    .getByLabel('Example input expression')
    .fill('torch.randn(2, 4) + 5');
  await form.getByRole('button', { name: 'Stage' }).click();
  const review = sidebar.getByRole('region', { name: 'Staged export' });
  await expect(review.getByText('Parity FAILED', { exact: true })).toBeVisible({
    timeout: 180_000
  });
  const write = review.getByRole('button', { name: 'Write' });
  await expect(write).toBeDisabled();
  expect(Number(await style(write, 'opacity'))).toBeLessThan(1);
  expect(await style(write, 'cursor')).toBe('not-allowed');
  await review.getByText(/\d+ warnings?/).click();
  const warnings = review.locator('.jp-ModelSave-warnings li');
  await expect(warnings.first()).toContainText('GuardOnDataDependentSymNode');
  for (const text of await warnings.allInnerTexts()) {
    expect(text.trim().endsWith('Next steps:')).toBe(false);
  }
  await snapshot(page, testInfo, `ff-${theme}-7-failed`);
  await expectReadable(page, testInfo, `${theme} failed`);
  await review.getByRole('button', { name: 'Discard' }).click();
}

/** A stage that fails: the error stays in view at 900 px. */
async function failedStage(
  sidebar: Locator,
  page: IJupyterLabPageFixture,
  theme: string,
  testInfo: TestInfo
): Promise<void> {
  await modelButton(sidebar, 'net').click();
  const form = sidebar.getByRole('form', { name: 'Export options' });
  await form.getByRole('radio', { name: 'Expression' }).check();
  await form.getByLabel('Example input expression').fill('torch.randn(1, 7)');
  await form.getByRole('button', { name: 'Stage' }).click();
  const error = sidebar.getByRole('alert').filter({ hasText: 'Error' });
  await expect(error.first()).toBeVisible({ timeout: 120_000 });
  await expect(error.first()).toBeInViewport();
  await snapshot(page, testInfo, `ff-${theme}-8-error`);
  await expectReadable(page, testInfo, `${theme} error`);
}
