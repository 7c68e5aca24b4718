import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { ModelSaveModel } from '../model';
import { KernelAPI } from '../protocol';
import { EmptyState } from './EmptyState';
import { ExportForm } from './ExportForm';
import { KernelHeader } from './KernelHeader';
import { ModelList } from './ModelList';
import { ReviewPanel } from './ReviewPanel';
import { useScrolledIntoView } from './scroll';
import { ServerStatus } from './ServerStatus';
import { StageProgress } from './StageProgress';

/** What the sidebar can do besides changing the model (they need the app). */
export interface ISidebarActions {
  /** Open the graph; with `nodes`, select and centre them. Resolves to the count selected. */
  openGraph: (
    staged: KernelAPI.IStagedReply,
    nodes?: string[]
  ) => Promise<number>;
  downloadStaged: (staged: KernelAPI.IStagedReply) => void;
  downloadWritten: (path: string) => void;
}

export interface IModelSavePanelProps {
  model: ModelSaveModel;
  actions: ISidebarActions;
  trans: TranslationBundle;
}

/** The whole sidebar: header (notebook, kernel), body (models, options, review), footer. */
export function ModelSavePanel({
  model,
  actions,
  trans
}: IModelSavePanelProps): JSX.Element {
  const title = trans.__('Model Save');
  const kernel = model.kernel;
  return (
    <div className="jp-ModelSave-panel" role="region" aria-label={title}>
      <header className="jp-ModelSave-header">
        <h2 className="jp-ModelSave-title">{title}</h2>
        {kernel && <KernelHeader kernel={kernel} trans={trans} />}
      </header>
      <div className="jp-ModelSave-body">
        {kernel ? (
          <Body model={model} actions={actions} trans={trans} />
        ) : (
          <EmptyState
            message={trans.__(
              'Open a notebook or console to list its PyTorch models'
            )}
          />
        )}
      </div>
      <footer className="jp-ModelSave-footer">
        <ServerStatus health={model.health} trans={trans} />
      </footer>
    </div>
  );
}

function Body({ model, actions, trans }: IModelSavePanelProps): JSX.Element {
  const side = model.side;
  switch (side.kind) {
    case 'unsupported':
      return (
        <EmptyState
          message={trans.__(
            'This kernel runs %1; models can be exported from Python kernels only.',
            side.language
          )}
        />
      );
    case 'dead':
      return (
        <EmptyState
          message={trans.__(
            'The kernel is dead. Restart it to list its models.'
          )}
        />
      );
    case 'error':
      return (
        <div className="jp-ModelSave-errorBox" role="alert">
          {trans.__('The kernel side could not start: %1', side.message)}
          <br />
          {trans.__(
            'Is jupyter_modelsave installed in this kernel’s environment?'
          )}
        </div>
      );
  }
  const models = model.models;
  if (models === null) {
    return <EmptyState message={trans.__('Connecting to the kernel…')} />;
  }
  if (models.length === 0) {
    return (
      <EmptyState message={trans.__('No PyTorch models in this kernel yet')} />
    );
  }
  const job = model.job;
  const selected = model.selected;
  const staging = job.kind === 'staging';
  return (
    <>
      <ModelList
        models={models}
        options={model.options}
        selected={selected?.name ?? null}
        disabled={staging || job.kind === 'staged'}
        onSelect={name => model.select(name)}
        trans={trans}
      />
      {selected && model.options && job.kind !== 'staged' && (
        <ExportForm
          key={selected.name}
          model={selected}
          options={model.options}
          disabled={staging}
          onStage={args => void model.stage(args)}
          trans={trans}
        />
      )}
      {job.kind === 'staging' && (
        <StageProgress
          step={job.step}
          fraction={job.fraction}
          onCancel={() => void model.cancel()}
          trans={trans}
        />
      )}
      {job.kind === 'error' && <StageError error={job.error} />}
      {job.kind === 'staged' && (
        <ReviewPanel
          key={job.staged.id}
          staged={job.staged}
          defaultFolder={exportsFolder(model.kernel?.path ?? '')}
          written={model.writtenTo}
          error={model.acceptError}
          onGraph={nodes => actions.openGraph(job.staged, nodes)}
          onDownload={() => actions.downloadStaged(job.staged)}
          onDownloadWritten={actions.downloadWritten}
          onWrite={args => model.write(args)}
          onDiscard={() => void model.discard()}
          onDiff={folder => model.diff(folder)}
          variants={model.variants(job.staged)}
          onVariant={precision => void model.stageVariant(precision)}
          trans={trans}
        />
      )}
    </>
  );
}

/** A failed stage: sticks to the bottom of the sidebar and scrolls into view when it appears. */
function StageError({ error }: { error: KernelAPI.IErrorInfo }): JSX.Element {
  const ref = useScrolledIntoView<HTMLDivElement>();
  return (
    <div
      className="jp-ModelSave-errorBox jp-ModelSave-sticky"
      role="alert"
      ref={ref}
    >
      <strong>{error.type}</strong>: {error.message}
    </div>
  );
}

/** `exports` next to the notebook (or the console's folder), relative to the Jupyter root. */
function exportsFolder(path: string): string {
  const parts = path.split('/');
  parts.pop();
  return [...parts, 'exports'].join('/');
}
