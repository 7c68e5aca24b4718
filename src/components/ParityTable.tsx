import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { formatNumber, formatShape } from '../format';
import { KernelAPI } from '../protocol';

export interface IParityTableProps {
  report: KernelAPI.IReport;
  trans: TranslationBundle;
}

/** Per output (its worst probe): name and shape, max abs, max rel, mismatched fraction, pass/fail. */
export function ParityTable({ report, trans }: IParityTableProps): JSX.Element {
  return (
    <div className="jp-ModelSave-parity">
      <table
        className="jp-ModelSave-parityTable"
        aria-label={trans.__('Parity report')}
      >
        <thead>
          <tr>
            <th scope="col">{trans.__('Output')}</th>
            <th scope="col">{trans.__('Max abs')}</th>
            <th scope="col">{trans.__('Max rel')}</th>
            <th scope="col" title={trans.__('Mismatched fraction')}>
              {trans.__('Mism.')}
            </th>
            <th scope="col">{trans.__('Result')}</th>
          </tr>
        </thead>
        <tbody>
          {report.outputs.map(o => (
            <tr key={o.name} data-passed={o.passed}>
              <th scope="row">
                {o.name}
                <small className="jp-ModelSave-shape">
                  {o.shape_mismatch ?? formatShape(o.shape)}
                </small>
              </th>
              <td>{formatNumber(o.max_abs)}</td>
              <td>{formatNumber(o.max_rel)}</td>
              <td>{`${(o.mismatch_fraction * 100).toFixed(1)}%`}</td>
              <td className="jp-ModelSave-verdict" data-passed={o.passed}>
                {o.passed ? `✓ ${trans.__('pass')}` : `✗ ${trans.__('fail')}`}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <ul className="jp-ModelSave-probes" aria-label={trans.__('Probes')}>
        {report.probes.map(p => (
          <li key={p.name} data-passed={p.passed}>
            {p.passed ? '✓' : '✗'} {p.name}
          </li>
        ))}
      </ul>
      {report.generation && report.generation.length > 0 && (
        <GreedyTokens runs={report.generation} trans={trans} />
      )}
      <div className="jp-ModelSave-reportMeta">
        {trans.__(
          'atol %1 · rtol %2 · reference on %3 · TF32 %4',
          formatNumber(report.atol),
          formatNumber(report.rtol),
          report.reference_device,
          report.tf32 ? trans.__('on') : trans.__('off')
        )}
      </div>
    </div>
  );
}

interface IGreedyTokensProps {
  runs: KernelAPI.IGreedyRun[];
  trans: TranslationBundle;
}

/** A generation export's greedy runs: the live model's and the artifact's tokens, row by row. */
function GreedyTokens({ runs, trans }: IGreedyTokensProps): JSX.Element {
  return (
    <table
      className="jp-ModelSave-greedy"
      aria-label={trans.__('Greedy generation')}
    >
      <thead>
        <tr>
          <th scope="col">{trans.__('Greedy run')}</th>
          <th scope="col">{trans.__('generate()')}</th>
          <th scope="col">{trans.__('Artifact')}</th>
        </tr>
      </thead>
      <tbody>
        {runs.map(run =>
          run.live_tokens.map((live, row) => {
            const got = run.artifact_tokens[row] ?? [];
            const same = live.join(' ') === got.join(' ');
            return (
              <tr key={`${run.name}-${row}`} data-passed={same}>
                <th scope="row">{`${run.name} [${row}]`}</th>
                <td>
                  <code>{live.join(' ')}</code>
                </td>
                <td className="jp-ModelSave-verdict" data-passed={same}>
                  <code>{got.join(' ')}</code>
                </td>
              </tr>
            );
          })
        )}
      </tbody>
    </table>
  );
}
