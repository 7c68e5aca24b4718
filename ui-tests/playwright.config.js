/**
 * Configuration for Playwright using default from @jupyterlab/galata.
 *
 * Runs headless on the system Chromium (`apt-get install chromium`); Playwright's
 * own browser download is skipped (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1).
 */
const baseConfig = require('@jupyterlab/galata/lib/playwright-config');

/** A second server, Notebook 7, for the magic and the widget (tests/notebook7.spec.ts). */
const NOTEBOOK7_PORT = 8890;
const NOTEBOOK7_URL = `http://localhost:${NOTEBOOK7_PORT}`;

module.exports = {
  ...baseConfig,
  reporter: [[process.env.CI ? 'github' : 'list'], ['html', { open: 'never' }]],
  use: {
    ...baseConfig.use,
    video: 'off',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage']
    }
  },
  webServer: [
    {
      // `jupyter` must be the project's venv (the Makefile puts .venv/bin first on PATH).
      command: 'jupyter lab --config jupyter_server_test_config.py',
      url: 'http://localhost:8888/lab',
      timeout: 120 * 1000,
      reuseExistingServer: !process.env.CI
    },
    {
      command: `jupyter notebook --config jupyter_server_test_config.py --port=${NOTEBOOK7_PORT} --JupyterNotebookApp.expose_app_in_browser=True`,
      url: `${NOTEBOOK7_URL}/tree`,
      timeout: 120 * 1000,
      reuseExistingServer: !process.env.CI
    }
  ]
};
