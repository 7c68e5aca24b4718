import { JupyterFrontEnd } from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { IFrame } from '@jupyterlab/ui-components';

import { modelSaveIcon } from './icons';
import { selectNodes } from './netronSelection';
import { netronUrl, stagedUrl } from './urls';

/**
 * A main-area tab with Netron's viewer (served by the server extension) on a staged graph.
 *
 * The iframe needs `allow-same-origin` (Netron fetches the model with the login cookie) and
 * `allow-scripts`; the page itself is served with no external requests (see `routes.py`).
 */
export function createGraphView(
  stagingId: string,
  fileName: string
): MainAreaWidget<IFrame> {
  const content = new IFrame({
    sandbox: ['allow-scripts', 'allow-same-origin', 'allow-downloads']
  });
  content.url = netronUrl(stagedUrl(stagingId, 'graph'), fileName);
  content.addClass('jp-ModelSave-graph');
  const widget = new MainAreaWidget({ content });
  widget.id = `jupyter-modelsave-graph-${stagingId}`;
  widget.title.label = `Graph: ${fileName}`;
  widget.title.icon = modelSaveIcon;
  widget.title.closable = true;
  return widget;
}

/**
 * Open the graph view, or bring its existing tab to the front; with `nodes`, select those
 * nodes in the viewer and centre them once it has drawn the graph.
 *
 * Resolves to the number of nodes selected (0 without `nodes`).
 */
export async function openGraph(
  shell: JupyterFrontEnd.IShell,
  stagingId: string,
  fileName: string,
  nodes: string[] = []
): Promise<number> {
  const id = `jupyter-modelsave-graph-${stagingId}`;
  if (!document.getElementById(id)) {
    shell.add(createGraphView(stagingId, fileName), 'main');
  }
  shell.activateById(id);
  const frame = document.getElementById(id)?.querySelector('iframe');
  if (!frame || nodes.length === 0) {
    return 0;
  }
  return selectNodes(frame, nodes);
}
