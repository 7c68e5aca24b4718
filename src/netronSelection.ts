/**
 * Selecting nodes in the embedded Netron viewer, from the parent frame.
 *
 * Netron has no public API for this. This module is the only place that touches its private
 * names (read from netron 9.3.3's `index.js` and `view.js`; `ui-tests/tests/localize.spec.ts`
 * fails when an upgrade renames them):
 * - `index.js` keeps the viewer as `window.__view__`;
 * - `__view__._target` is the drawn graph, `_target._table` maps the model's objects (ONNX
 *   nodes have a string `name` and `inputs`/`outputs` arrays) to drawn elements;
 * - `_target.select([objects])` highlights them and returns their drawn elements;
 * - the graph scrolls inside the element `#target` of the page (Netron's own
 *   `_target.scrollTo(elements)` centres a selection only when it is out of view, so the
 *   selection is centred here by scrolling `#target`; `scrollTo` is the fallback).
 *
 * The viewer's page is same-origin (served by the server extension), so the parent frame reaches
 * it without any request of its own.
 */

/** What went wrong, in words for the user. */
export class NetronSelectionError extends Error {}

interface INetronNode {
  name: string;
  inputs: unknown[];
  outputs: unknown[];
}

interface INetronTarget {
  _table: Map<unknown, unknown>;
  select(objects: unknown[] | null): Element[] | null;
  scrollTo(elements: Element[] | null): void;
}

interface INetronView {
  _target?: INetronTarget | null;
}

/** How often and how long to wait for Netron to draw the graph. */
const POLL_MS = 200;
const DEFAULT_TIMEOUT_MS = 60_000;

/**
 * Select the nodes named `names` in the Netron viewer inside `frame` and centre them.
 *
 * Waits until the viewer has drawn a graph (up to `timeoutMs`). Resolves to the number of nodes
 * selected; rejects with `NetronSelectionError` when the viewer never draws one, or when its
 * private names are not what this module expects (a Netron upgrade).
 */
export async function selectNodes(
  frame: HTMLIFrameElement,
  names: string[],
  timeoutMs = DEFAULT_TIMEOUT_MS
): Promise<number> {
  const target = await drawnGraph(frame, timeoutMs);
  const wanted = new Set(names);
  const objects = [...target._table.keys()].filter(
    key => isNode(key) && wanted.has(key.name)
  );
  const elements = target.select(objects);
  if (objects.length > 0 && elements && elements.length > 0) {
    if (!centre(frame, elements)) {
      target.scrollTo(elements);
    }
  }
  return objects.length;
}

/** Scroll Netron's `#target` so the middle of `elements` is in the middle of the view. */
function centre(frame: HTMLIFrameElement, elements: Element[]): boolean {
  const container = frame.contentDocument?.getElementById('target');
  if (!container) {
    return false;
  }
  const rects = elements.map(e => e.getBoundingClientRect());
  const left = Math.min(...rects.map(r => r.left));
  const right = Math.max(...rects.map(r => r.right));
  const top = Math.min(...rects.map(r => r.top));
  const bottom = Math.max(...rects.map(r => r.bottom));
  const view = container.getBoundingClientRect();
  container.scrollTo({
    left:
      container.scrollLeft +
      (left + right) / 2 -
      (view.left + container.clientWidth / 2),
    top:
      container.scrollTop +
      (top + bottom) / 2 -
      (view.top + container.clientHeight / 2),
    behavior: 'instant'
  });
  return true;
}

async function drawnGraph(
  frame: HTMLIFrameElement,
  timeoutMs: number
): Promise<INetronTarget> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const view = viewOf(frame);
    const target = view?._target;
    if (target) {
      if (!isTarget(target)) {
        throw new NetronSelectionError(
          'This Netron version has no graph selection API that jupyter_modelsave knows ' +
            '(expected __view__._target.select and scrollTo).'
        );
      }
      if (target._table.size > 0) {
        return target;
      }
    }
    if (Date.now() > deadline) {
      throw new NetronSelectionError(
        view
          ? 'Netron has not drawn the graph yet; try again when it shows.'
          : 'The graph view has no Netron viewer (window.__view__) to select nodes in.'
      );
    }
    await new Promise(resolve => setTimeout(resolve, POLL_MS));
  }
}

function viewOf(frame: HTMLIFrameElement): INetronView | null {
  try {
    const win = frame.contentWindow as (Window & { __view__?: unknown }) | null;
    const view = win?.__view__;
    return view && typeof view === 'object' ? (view as INetronView) : null;
  } catch {
    return null; // not loaded yet, or another origin: nothing to reach
  }
}

function isTarget(value: unknown): value is INetronTarget {
  const t = value as Partial<INetronTarget>;
  // the iframe's Map is another realm's: no instanceof
  return (
    typeof t._table?.keys === 'function' &&
    typeof t._table.size === 'number' &&
    typeof t.select === 'function' &&
    typeof t.scrollTo === 'function'
  );
}

function isNode(value: unknown): value is INetronNode {
  const n = value as Partial<INetronNode> | null;
  return (
    !!n &&
    typeof n.name === 'string' &&
    Array.isArray(n.inputs) &&
    Array.isArray(n.outputs)
  );
}
