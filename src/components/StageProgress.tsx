import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

export interface IStageProgressProps {
  step: string;
  fraction: number;
  onCancel: () => void;
  trans: TranslationBundle;
}

/**
 * The engine's progress while it stages, with Cancel (interrupts the kernel). It sticks to the
 * bottom of the sidebar, so it stays in view however long the form above it is.
 */
export function StageProgress({
  step,
  fraction,
  onCancel,
  trans
}: IStageProgressProps): JSX.Element {
  const percent = Math.round(fraction * 100);
  return (
    <div
      className="jp-ModelSave-progress jp-ModelSave-sticky"
      role="group"
      aria-label={trans.__('Staging')}
    >
      <div className="jp-ModelSave-progressLine">
        <span className="jp-ModelSave-progressStep">
          {trans.__('Staging: %1', step)}
        </span>
        <span>{percent}%</span>
      </div>
      <div
        className="jp-ModelSave-progressTrack"
        role="progressbar"
        aria-label={trans.__('Staging progress')}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={percent}
      >
        <div
          className="jp-ModelSave-progressBar"
          style={{ width: `${percent}%` }}
        />
      </div>
      <button
        type="button"
        className="jp-Button jp-mod-styled jp-mod-reject"
        onClick={onCancel}
      >
        {trans.__('Cancel')}
      </button>
    </div>
  );
}
