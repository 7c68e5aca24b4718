import { expect, test } from '@jupyterlab/galata';
import * as http from 'http';
import type { AddressInfo } from 'net';

import { cspViolations, keepEval, recordCspViolations } from './helpers';

/**
 * Netron's page on a crafted link: it opens only this server's graphs, and its
 * Content-Security-Policy stops any request to another origin (issue 14, finding 7).
 */

/** A web server on another port that records every request it gets. */
async function otherOrigin(): Promise<{
  port: number;
  hits: string[];
  close: () => Promise<void>;
}> {
  const hits: string[] = [];
  const server = http.createServer((request, response) => {
    hits.push(`${request.method} ${request.url}`);
    response.writeHead(200, { 'Access-Control-Allow-Origin': '*' });
    response.end('model bytes');
  });
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port,
    hits,
    close: () => new Promise<void>(resolve => server.close(() => resolve()))
  };
}

test.describe('Netron viewer: only this server', () => {
  test('a crafted link makes no request to another origin', async ({
    context
  }) => {
    const other = await otherOrigin();
    const model = `http://127.0.0.1:${other.port}/x.onnx`;
    const page = await context.newPage();
    await keepEval(page);
    await recordCspViolations(page);
    const requests: string[] = [];
    page.on('request', request => requests.push(request.url()));
    try {
      // ?url=: the server refuses the page.
      const refused = await page.goto(
        `/modelsave/netron/?url=${encodeURIComponent(model)}&identifier=x.onnx`
      );
      expect(refused?.status()).toBe(400);

      // #<url> (never sent to the server): the page's guard removes it before Netron reads it,
      // says so, and Netron shows its empty start page.
      await page.goto(`/modelsave/netron/#${model}`);
      await expect(page.getByRole('alert')).toContainText(
        'opens only the graphs of this Jupyter server'
      );
      await expect(page.locator('body')).toHaveClass(/welcome/);
      expect(new URL(page.url()).hash).toBe('');
      expect(await cspViolations(page)).toEqual([]);

      // And should a script in the page try, the policy blocks any fetch to another origin.
      const outcome = await page.evaluate(async url => {
        try {
          await fetch(url);
          return 'fetched';
        } catch {
          return 'blocked';
        }
      }, model);
      expect(outcome).toBe('blocked');
      await expect
        .poll(() => cspViolations(page))
        .toEqual([`connect-src ${model}`]);

      // Nothing ever reached the other origin.
      expect(other.hits).toEqual([]);
      expect(requests.filter(url => url.includes(`:${other.port}`))).toEqual(
        []
      );
    } finally {
      await page.close();
      await other.close();
    }
  });
});
