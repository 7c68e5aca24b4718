import { ReactWidget, UseSignal } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { ISidebarActions, ModelSavePanel } from './components/ModelSavePanel';
import { modelSaveIcon } from './icons';
import { ModelSaveModel } from './model';
import { SIDEBAR_ID } from './tokens';

/**
 * The left-area sidebar: a ReactWidget that re-renders on `model.changed`, and tells the model
 * when it is shown or hidden (the model list refreshes only while visible).
 */
export class ModelSaveSidebar extends ReactWidget {
  constructor(
    model: ModelSaveModel,
    actions: ISidebarActions,
    trans: TranslationBundle
  ) {
    super();
    this.model = model;
    this._actions = actions;
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

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.setVisible(true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.setVisible(false);
  }

  protected render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => (
          <ModelSavePanel
            model={this.model}
            actions={this._actions}
            trans={this._trans}
          />
        )}
      </UseSignal>
    );
  }

  private _actions: ISidebarActions;
  private _trans: TranslationBundle;
}
