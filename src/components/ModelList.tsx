import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { formatBytes, formatCount, formatShapes } from '../format';
import { KernelAPI } from '../protocol';

export interface IModelListProps {
  models: KernelAPI.IModelInfo[];
  options: KernelAPI.IOptionsReply | null;
  selected: string | null;
  disabled: boolean;
  onSelect: (name: string) => void;
  trans: TranslationBundle;
}

/** The kernel's models; one button per model, the picked one pressed. */
export function ModelList({
  models,
  options,
  selected,
  disabled,
  onSelect,
  trans
}: IModelListProps): JSX.Element {
  return (
    <ul className="jp-ModelSave-models" aria-label={trans.__('Models')}>
      {models.map(m => {
        const framework = options?.frameworks[m.framework]; // as the kernel describes it
        const recorded = framework?.records_calls ?? true;
        return (
          <li key={m.name}>
            <button
              type="button"
              className="jp-ModelSave-model"
              aria-pressed={m.name === selected}
              disabled={disabled}
              onClick={() => onSelect(m.name)}
            >
              <span className="jp-ModelSave-modelName">{m.name}</span>
              <span className="jp-ModelSave-modelClass">
                {m.class_name}
                <span className="jp-ModelSave-framework">
                  {framework?.label ?? m.framework}
                </span>
              </span>
              <span className="jp-ModelSave-modelMeta">
                {trans.__(
                  '%1 params · %2 · %3 · %4',
                  formatCount(m.num_params),
                  formatBytes(m.size_bytes),
                  m.device,
                  m.dtype
                )}
              </span>
              <span className="jp-ModelSave-modelMeta">
                {m.last_input
                  ? recorded
                    ? trans.__('last input %1', formatShapes(m.last_input))
                    : trans.__('declared input %1', formatShapes(m.last_input))
                  : recorded
                    ? trans.__('no call recorded yet')
                    : trans.__('no declared input: give an example')}
              </span>
            </button>
          </li>
        );
      })}
    </ul>
  );
}
