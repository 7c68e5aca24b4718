import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { HealthState, IKernelState } from '../tokens';
import { EmptyState } from './EmptyState';
import { KernelHeader } from './KernelHeader';
import { ServerStatus } from './ServerStatus';

export interface IModelSavePanelProps {
  kernel: IKernelState | null;
  health: HealthState;
  trans: TranslationBundle;
}

/** The whole sidebar: header, body (model list to come), footer. */
export function ModelSavePanel({
  kernel,
  health,
  trans
}: IModelSavePanelProps): JSX.Element {
  const title = trans.__('Model Save');
  return (
    <div className="jp-ModelSave-panel" role="region" aria-label={title}>
      <header className="jp-ModelSave-header">
        <h2 className="jp-ModelSave-title">{title}</h2>
        {kernel && <KernelHeader kernel={kernel} trans={trans} />}
      </header>
      <div className="jp-ModelSave-body">
        <EmptyState
          message={
            kernel
              ? trans.__('PyTorch models of this kernel will be listed here.')
              : trans.__('Open a notebook to list its PyTorch models')
          }
        />
      </div>
      <footer className="jp-ModelSave-footer">
        <ServerStatus health={health} trans={trans} />
      </footer>
    </div>
  );
}
