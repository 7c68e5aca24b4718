import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { formatNumber } from '../format';
import { KernelAPI } from '../protocol';

export interface IReleaseFactsProps {
  staged: KernelAPI.IStagedReply;
  /** Precisions the review offers as variants of this export. */
  variants: string[];
  onVariant: (precision: string) => void;
  trans: TranslationBundle;
}

/** Precision (how a variant was made, its size against fp32), latency, and the variants. */
export function ReleaseFacts({
  staged,
  variants,
  onVariant,
  trans
}: IReleaseFactsProps): JSX.Element {
  const variant = staged.variant;
  const latency = staged.latency;
  const agreement = staged.report?.agreement;
  return (
    <section
      className="jp-ModelSave-release"
      aria-label={trans.__('Release check')}
    >
      <dl className="jp-ModelSave-facts">
        <dt>{trans.__('Precision')}</dt>
        <dd title={variant?.method}>
          {variant
            ? trans.__('%1 (from %2)', variant.precision, variant.from)
            : trans.__('%1 (the model’s own)', staged.precision ?? 'fp32')}
          {variant?.size_ratio
            ? trans.__(', %1× the fp32 size', variant.size_ratio.toFixed(2))
            : ''}
        </dd>
        {agreement && (
          <>
            <dt>{trans.__('Agreement')}</dt>
            <dd>
              {Object.entries(agreement.outputs)
                .map(([name, a]) =>
                  a.metric === 'top1'
                    ? trans.__(
                        '%1: top-1 %2',
                        name,
                        typeof a.value === 'number'
                          ? `${(a.value * 100).toFixed(1)}%`
                          : String(a.value)
                      )
                    : trans.__('%1: cosine %2', name, formatNumber(a.value))
                )
                .join(' · ')}
            </dd>
          </>
        )}
        {latency && (
          <>
            <dt>{trans.__('Latency')}</dt>
            <dd aria-label={trans.__('Latency')}>
              {trans.__(
                'p50 %1 ms · p95 %2 ms (%3) · eager p50 %4 ms · %5%6',
                formatNumber(latency.p50_ms),
                formatNumber(latency.p95_ms),
                latency.runtime,
                formatNumber(latency.eager_p50_ms),
                latency.device,
                latency.batch === null
                  ? ''
                  : trans.__(', batch %1', latency.batch)
              )}
            </dd>
          </>
        )}
      </dl>
      {variants.length > 0 && (
        <div
          className="jp-ModelSave-variants"
          role="group"
          aria-label={trans.__('Variants')}
        >
          <span>{trans.__('Stage as')}</span>
          {variants.map(p => (
            <button
              key={p}
              type="button"
              className="jp-Button jp-mod-styled"
              onClick={() => onVariant(p)}
            >
              {p}
            </button>
          ))}
        </div>
      )}
    </section>
  );
}

export interface IDiffViewProps {
  /** undefined: being compared; null: no earlier version in the folder. */
  diff: KernelAPI.IDiff | null | undefined;
  error: string | null;
  name: string;
  folder: string;
  trans: TranslationBundle;
}

/** The staged export against the newest artifact of its name in the destination folder. */
export function DiffView({
  diff,
  error,
  name,
  folder,
  trans
}: IDiffViewProps): JSX.Element {
  let body: JSX.Element;
  if (error) {
    body = <p className="jp-ModelSave-error">{error}</p>;
  } else if (diff === undefined) {
    body = <p className="jp-ModelSave-hint">{trans.__('Comparing…')}</p>;
  } else if (diff === null) {
    body = (
      <p className="jp-ModelSave-hint">
        {trans.__('No earlier version of %1 in %2.', name, folder || '.')}
      </p>
    );
  } else {
    const changed = Object.keys(diff.signature_changed);
    body = (
      <>
        <dl className="jp-ModelSave-facts">
          <dt>{trans.__('Previous')}</dt>
          <dd title={diff.previous_path}>
            {trans.__('version %1', diff.previous_version)}
          </dd>
          <dt>{trans.__('Size')}</dt>
          <dd>
            {diff.size_ratio === null
              ? '–'
              : trans.__('%1× the previous', diff.size_ratio.toFixed(2))}
          </dd>
          <dt>{trans.__('Values')}</dt>
          <dd>
            {diff.compared
              ? trans.__(
                  '%1: max abs %2, cosine %3',
                  diff.compared,
                  formatNumber(diff.max_abs),
                  formatNumber(diff.cosine)
                )
              : (diff.notes[0] ?? trans.__('not compared'))}
          </dd>
          <dt>{trans.__('Signature')}</dt>
          <dd>
            {changed.length
              ? trans.__('changed: %1', changed.join(', '))
              : trans.__('unchanged')}
          </dd>
        </dl>
        {diff.warnings.length > 0 && (
          <ul
            className="jp-ModelSave-diffWarnings"
            aria-label={trans.__('Changes to check')}
            role="alert"
          >
            {diff.warnings.map((w, i) => (
              <li key={i}>{w}</li>
            ))}
          </ul>
        )}
      </>
    );
  }
  return (
    <section
      className="jp-ModelSave-diff"
      aria-label={trans.__('Against the previous version')}
    >
      <h4>{trans.__('Against the previous version')}</h4>
      {body}
    </section>
  );
}
