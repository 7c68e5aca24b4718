import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { formatNumber, formatShape } from '../format';
import { KernelAPI } from '../protocol';

export interface IDivergencePanelProps {
  report: KernelAPI.IReport;
  /** Whether the staged export has a graph to show (ONNX). */
  hasGraph: boolean;
  /** Open the graph with these nodes selected; resolves to the count selected. */
  onShowNodes: (nodes: string[]) => Promise<number>;
  trans: TranslationBundle;
}

/**
 * Where the artifact starts to differ (`report.first_divergence`): the module, its class and
 * source line, "Show in graph", the localization in words and the per-layer table.
 */
export function DivergencePanel(props: IDivergencePanelProps): JSX.Element {
  const { report, trans } = props;
  const first = report.first_divergence ?? null;
  const layers = report.layers ?? [];
  const [problem, setProblem] = React.useState('');
  const scroller = React.useRef<HTMLDivElement>(null);
  React.useEffect(() => {
    // the marked row in the middle of the table's own scroll area (the panel stays put)
    const box = scroller.current;
    const row = box?.querySelector<HTMLElement>('tr[data-first="true"]');
    if (box && row) {
      box.scrollTop = row.offsetTop - (box.clientHeight - row.offsetHeight) / 2;
    }
  }, [report]);
  const show = async (nodes: string[]) => {
    setProblem('');
    try {
      const count = await props.onShowNodes(nodes);
      if (count === 0) {
        setProblem(trans.__('None of its nodes is drawn in this graph.'));
      }
    } catch (error) {
      setProblem(String((error as Error).message ?? error));
    }
  };
  return (
    <section
      className="jp-ModelSave-divergence"
      aria-label={trans.__('Where it diverges')}
    >
      {first && (
        <div className="jp-ModelSave-firstDivergence">
          <div className="jp-ModelSave-divergenceTitle">
            {trans.__('First diverging module')}
          </div>
          <div className="jp-ModelSave-divergenceModule">
            <code aria-label={trans.__('Module')}>
              {moduleName(first, trans)}
            </code>{' '}
            <span className="jp-ModelSave-divergenceClass">
              {first.class_name}
              {first.call > 0 && trans.__(', call %1', first.call + 1)}
            </span>
          </div>
          {first.source && (
            <div
              className="jp-ModelSave-divergenceSource"
              aria-label={trans.__('Source line')}
              title={first.source}
            >
              {shortSource(first.source)}
            </div>
          )}
          {first.code && (
            <pre className="jp-ModelSave-divergenceCode">{first.code}</pre>
          )}
          {props.hasGraph && first.nodes.length > 0 && (
            <button
              type="button"
              className="jp-Button jp-mod-styled"
              onClick={() => void show(first.nodes)}
              title={trans.__(
                'Open the graph with the nodes that compute this module selected'
              )}
            >
              {trans.__('Show in graph')}
            </button>
          )}
          {problem && (
            <small className="jp-ModelSave-error" role="alert">
              {problem}
            </small>
          )}
        </div>
      )}
      {report.localization && (
        <p className="jp-ModelSave-localization">{report.localization}</p>
      )}
      {layers.length > 0 && (
        <details className="jp-ModelSave-layers" open={!!first}>
          <summary>
            {trans._n(
              'Per-layer comparison (%1 module call)',
              'Per-layer comparison (%1 module calls)',
              layers.length
            )}
          </summary>
          <div className="jp-ModelSave-layersScroll" ref={scroller}>
            <table
              className="jp-ModelSave-parityTable jp-ModelSave-layerTable"
              aria-label={trans.__('Per-layer comparison')}
            >
              <thead>
                <tr>
                  <th scope="col">{trans.__('Module')}</th>
                  <th scope="col">{trans.__('Max abs')}</th>
                  <th scope="col">{trans.__('Cosine')}</th>
                </tr>
              </thead>
              <tbody>
                {layers.map(layer => (
                  <tr
                    key={`${layer.module}#${layer.call}`}
                    data-passed={layer.passed}
                    data-first={isFirst(layer, first)}
                    aria-current={isFirst(layer, first) ? 'true' : undefined}
                  >
                    <th scope="row" title={layer.source ?? undefined}>
                      {moduleName(layer, trans)}
                      {layer.call > 0 && ` #${layer.call + 1}`}
                      <small className="jp-ModelSave-shape">
                        {layer.class_name} {formatShape(layer.shape)}
                      </small>
                    </th>
                    <td>{formatNumber(layer.max_abs)}</td>
                    <td>{formatCosine(layer.cosine)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </details>
      )}
    </section>
  );
}

function isFirst(
  layer: KernelAPI.ILayerDiff,
  first: KernelAPI.ILayerDiff | null
): boolean {
  return (
    first !== null && layer.module === first.module && layer.call === first.call
  );
}

function moduleName(
  layer: KernelAPI.ILayerDiff,
  trans: TranslationBundle
): string {
  return layer.module || trans.__('(the model)');
}

/** `file.py:12` for a long path (the full path is the tooltip). */
function shortSource(source: string): string {
  const parts = source.split('/');
  return parts.length > 2 ? `…/${parts.slice(-2).join('/')}` : source;
}

function formatCosine(value: number | string): string {
  return typeof value === 'number' ? value.toFixed(4) : value;
}
