import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { HealthState } from '../tokens';

export interface IServerStatusProps {
  health: HealthState;
  trans: TranslationBundle;
}

/** One line about the server extension: its version, or why it cannot be reached. */
export function ServerStatus({
  health,
  trans
}: IServerStatusProps): JSX.Element {
  const label = trans.__('Server extension');
  switch (health.kind) {
    case 'pending':
      return (
        <div className="jp-ModelSave-server" aria-label={label}>
          {trans.__('checking server extension…')}
        </div>
      );
    case 'ok':
      return (
        <div className="jp-ModelSave-server" aria-label={label}>
          {trans.__('server extension %1', health.health.version)}
        </div>
      );
    case 'error':
      return (
        <div
          className="jp-ModelSave-server jp-ModelSave-serverError"
          aria-label={label}
          role="alert"
        >
          {trans.__('server extension unavailable: %1', health.message)}
        </div>
      );
  }
}
