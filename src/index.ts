import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';

import { ModelSaveModel } from './model';
import { PLUGIN_ID } from './tokens';
// The sidebar is added to the shell (and restored) during activation, so load it at once.
// eslint-disable-next-line jupyter/prefer-lazy-imports
import { ModelSaveSidebar } from './widget';

/**
 * The Model Save sidebar: lists the PyTorch models of the current notebook's kernel.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Export live PyTorch models from a Jupyter kernel as checked, versioned artifacts.',
  autoStart: true,
  requires: [ILabShell, INotebookTracker],
  optional: [ILayoutRestorer, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    labShell: ILabShell,
    tracker: INotebookTracker,
    restorer: ILayoutRestorer | null,
    translator: ITranslator | null
  ) => {
    const trans = (translator ?? nullTranslator).load('jupyter_modelsave');
    const model = new ModelSaveModel(tracker);
    const sidebar = new ModelSaveSidebar(model, trans);

    // labShell is app.shell in JupyterLab; requiring it keeps the plugin out of
    // shells without a left area.
    labShell.add(sidebar, 'left', { rank: 600 });
    if (restorer) {
      restorer.add(sidebar, PLUGIN_ID);
    }
    void model.refreshHealth();

    console.log('JupyterLab extension jupyter_modelsave is activated!');
  }
};

export default plugin;
