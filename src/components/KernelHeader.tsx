import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { IKernelState } from '../tokens';

export interface IKernelHeaderProps {
  kernel: IKernelState;
  trans: TranslationBundle;
}

/** The current notebook or console, its kernel's display name and status. */
export function KernelHeader({
  kernel,
  trans
}: IKernelHeaderProps): JSX.Element {
  return (
    <div className="jp-ModelSave-kernel" aria-label={trans.__('Kernel')}>
      <div className="jp-ModelSave-notebook" title={kernel.path}>
        {kernel.name}
      </div>
      <div className="jp-ModelSave-kernelLine">
        <span
          className="jp-ModelSave-kernelName"
          aria-label={trans.__('Kernel name')}
        >
          {kernel.displayName}
        </span>
        <span
          className="jp-ModelSave-kernelStatus"
          data-status={kernel.status}
          role="status"
          aria-label={trans.__('Kernel status')}
        >
          {kernel.status}
        </span>
      </div>
    </div>
  );
}
