import { ReactWidget, UseSignal } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { ModelSavePanel } from './components/ModelSavePanel';
import { modelSaveIcon } from './icons';
import { ModelSaveModel } from './model';
import { SIDEBAR_ID } from './tokens';

/**
 * The left-area sidebar: a ReactWidget that re-renders on `model.changed`.
 */
export class ModelSaveSidebar extends ReactWidget {
  constructor(model: ModelSaveModel, trans: TranslationBundle) {
    super();
    this.model = model;
    this._trans = trans;
    this.id = SIDEBAR_ID;
    this.addClass('jp-ModelSave');
    this.title.icon = modelSaveIcon;
    this.title.caption = trans.__('Model Save');
  }

  readonly model: ModelSaveModel;

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.model.dispose();
    super.dispose();
  }

  protected render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => (
          <ModelSavePanel
            kernel={this.model.kernel}
            health={this.model.health}
            trans={this._trans}
          />
        )}
      </UseSignal>
    );
  }

  private _trans: TranslationBundle;
}
