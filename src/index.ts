import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { IConsoleTracker } from '@jupyterlab/console';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';

import { ISidebarActions } from './components/ModelSavePanel';
// eslint-disable-next-line jupyter/prefer-lazy-imports
import { ModelSaveModel } from './model';
import { PLUGIN_ID } from './tokens';
import { downloadUrl, saveToComputer, stagedUrl } from './urls';
// The sidebar is added to the shell (and restored) during activation, so load it at once.
// eslint-disable-next-line jupyter/prefer-lazy-imports
import { ModelSaveSidebar } from './widget';

/**
 * The Model Save sidebar: lists the PyTorch models of the current notebook's (or console's) kernel, stages an
 * export in the kernel, shows its parity report and graph, and writes or downloads it.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Export live PyTorch models from a Jupyter kernel as checked, versioned artifacts.',
  autoStart: true,
  requires: [ILabShell, INotebookTracker],
  optional: [
    ILayoutRestorer,
    ITranslator,
    IDefaultFileBrowser,
    IConsoleTracker
  ],
  activate: (
    app: JupyterFrontEnd,
    labShell: ILabShell,
    tracker: INotebookTracker,
    restorer: ILayoutRestorer | null,
    translator: ITranslator | null,
    fileBrowser: IDefaultFileBrowser | null,
    consoles: IConsoleTracker | null
  ) => {
    const trans = (translator ?? nullTranslator).load('jupyter_modelsave');
    const model = new ModelSaveModel({
      shell: labShell,
      notebooks: tracker,
      consoles
    });
    const actions: ISidebarActions = {
      openGraph: async (staged, nodes) => {
        if (!staged.graph) {
          return 0;
        }
        const { openGraph } = await import('./graph');
        return openGraph(app.shell, staged.id, staged.graph, nodes);
      },
      downloadStaged: staged =>
        saveToComputer(stagedUrl(staged.id, 'artifact')),
      downloadWritten: path => saveToComputer(downloadUrl(path))
    };
    // Show a written artifact in the file browser at once, not at its next poll.
    model.written.connect(() => void fileBrowser?.model.refresh());
    const sidebar = new ModelSaveSidebar(model, actions, trans);

    // labShell is app.shell in JupyterLab; requiring it keeps the plugin out of
    // shells without a left area.
    labShell.add(sidebar, 'left', { rank: 600 });
    if (restorer) {
      restorer.add(sidebar, PLUGIN_ID);
    }
    void model.refreshHealth();
  }
};

export default plugin;
