import { ILabShell } from '@jupyterlab/application';
import { ISessionContext } from '@jupyterlab/apputils';
import { ConsolePanel, IConsoleTracker } from '@jupyterlab/console';
import {
  INotebookTracker,
  NotebookActions,
  NotebookPanel
} from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { KernelSide, KernelSideError } from './kernel';
import { requestAPI } from './request';
import { KernelAPI } from './protocol';
import {
  HealthState,
  IHealth,
  IKernelState,
  IServerConfig,
  JobState,
  KernelSideState
} from './tokens';

/** A main-area widget with a kernel session that the sidebar can follow. */
export type SessionPanel = NotebookPanel | ConsolePanel;

/**
 * State of the Model Save sidebar.
 *
 * Follows the session of the current notebook or console: the main area's current widget when
 * it is one of them, else the last one followed (the sidebar keeps its kernel while a Netron or
 * editor tab is active). Keeps one `KernelSide` per kernel and refreshes the model list after
 * each cell executed in the followed notebook or console while the sidebar is visible (never
 * while it is hidden). Emits `changed` on every update.
 */
export class ModelSaveModel implements IDisposable {
  constructor(options: ModelSaveModel.IOptions) {
    this._shell = options.shell;
    this._notebooks = options.notebooks;
    this._consoles = options.consoles;
    this._shell.currentChanged.connect(this._onCurrentChanged, this);
    this._notebooks.currentChanged.connect(this._onCurrentChanged, this);
    this._consoles?.currentChanged.connect(this._onCurrentChanged, this);
    NotebookActions.executed.connect(this._onExecuted, this);
    this._follow(this._pick());
  }

  /** Emitted whenever anything the sidebar shows changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Emitted after an artifact was written (the file browser refreshes). */
  get written(): ISignal<this, KernelAPI.IWrittenReply> {
    return this._writtenSignal;
  }

  /** The followed notebook's or console's kernel, or `null` when none is open. */
  get kernel(): IKernelState | null {
    const panel = this._panel;
    if (!panel || panel.isDisposed) {
      return null;
    }
    const ctx = panel.sessionContext;
    const path = panel instanceof NotebookPanel ? panel.context.path : ctx.path;
    return {
      path,
      name:
        panel instanceof NotebookPanel
          ? (path.split('/').pop() ?? path)
          : ctx.name,
      displayName: ctx.kernelDisplayName,
      status: ctx.kernelDisplayStatus
    };
  }

  /** The last answer of `GET modelsave/health`. */
  get health(): HealthState {
    return this._health;
  }

  get side(): KernelSideState {
    return this._sideState;
  }

  /** The kernel's models, `null` before the first answer. */
  get models(): KernelAPI.IModelsReply['models'] | null {
    return this._models;
  }

  get options(): KernelAPI.IOptionsReply | null {
    return this._options;
  }

  get selected(): KernelAPI.IModelInfo | null {
    return this._models?.find(m => m.name === this._selected) ?? null;
  }

  get job(): JobState {
    return this._job;
  }

  /** Where the staged export was written, once it was. */
  get writtenTo(): KernelAPI.IWrittenReply | null {
    return this._writtenTo;
  }

  /** An error of the last write or discard. */
  get acceptError(): KernelAPI.IErrorInfo | null {
    return this._acceptError;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** The sidebar tells the model when it is shown or hidden. */
  setVisible(visible: boolean): void {
    this._visible = visible;
    if (visible) {
      void this.refreshModels();
    }
  }

  select(name: string | null): void {
    if (this._job.kind === 'staging') {
      return;
    }
    this._selected = name;
    this._emit();
  }

  /** Ask the server extension for its version. */
  async refreshHealth(): Promise<void> {
    this._health = { kind: 'pending' };
    this._changed.emit();
    try {
      const health = await requestAPI<IHealth>('health');
      this._health = { kind: 'ok', health };
    } catch (error) {
      this._health = { kind: 'error', message: String(error) };
      console.error('jupyter_modelsave: server extension check failed', error);
    }
    if (!this._isDisposed) {
      this._changed.emit();
    }
  }

  /** List the models of the current kernel (installs the kernel side when needed). */
  async refreshModels(): Promise<void> {
    if (!this._visible || this._job.kind === 'staging') {
      return;
    }
    const side = await this._ensureSide();
    if (!side) {
      return;
    }
    try {
      const reply = await side.request('models', {});
      // the kernel describes the frameworks it has imported: ask again for a new one's
      const described = this._options?.frameworks ?? {};
      const options = reply.models.every(m => m.framework in described)
        ? this._options
        : await side.request('options', {});
      if (side === this._side) {
        this._models = reply.models;
        this._options = options;
        this._emit();
      }
    } catch (error) {
      console.warn('jupyter_modelsave: listing models failed', error);
    }
  }

  /** Stage the selected model in the kernel. */
  async stage(args: KernelAPI.IStageArgs): Promise<void> {
    const side = this._side;
    if (!side || this._job.kind === 'staging') {
      return;
    }
    this._lastStage = args;
    await this._discardCurrent();
    this._job = { kind: 'staging', step: 'prepare', fraction: 0 };
    this._writtenTo = null;
    this._acceptError = null;
    this._emit();
    try {
      const staged = await side.request('stage', args, (step, fraction) => {
        this._job = { kind: 'staging', step, fraction };
        this._emit();
      });
      this._job = { kind: 'staged', staged };
    } catch (error) {
      this._job = { kind: 'error', error: asError(error) };
    }
    this._emit();
    void this.refreshModels();
  }

  /** The precisions the review offers as variants of the staged export (not its own): the
   * format's capabilities, for a model variants are made of. */
  variants(staged: KernelAPI.IStagedReply): string[] {
    const model = this.selected;
    const format =
      model &&
      this._options?.frameworks[model.framework]?.formats[staged.format];
    return model?.variants && format && this._lastStage
      ? format.precisions.filter(p => p !== staged.precision)
      : [];
  }

  /** Stage the last staged model again as another precision (the current export is dropped). */
  async stageVariant(precision: string): Promise<void> {
    if (this._lastStage) {
      await this.stage({
        ...this._lastStage,
        precision: precision === 'fp32' ? null : precision
      });
    }
  }

  /** The staged export against the newest artifact of its name in `folder` (null: none). */
  async diff(folder: string): Promise<KernelAPI.IDiff | null> {
    if (this._job.kind !== 'staged' || !this._side) {
      return null;
    }
    const reply = await this._side.request('diff', {
      id: this._job.staged.id,
      folder
    });
    return reply.diff;
  }

  /** Cancel a running stage by interrupting the kernel (the engine cleans up). */
  async cancel(): Promise<void> {
    if (this._job.kind === 'staging') {
      await this._kernelConnection()?.interrupt();
    }
  }

  /** Write the staged export below the server root. */
  async write(args: Omit<KernelAPI.IWriteArgs, 'id'>): Promise<void> {
    if (this._job.kind !== 'staged' || !this._side) {
      return;
    }
    this._acceptError = null;
    try {
      const written = await this._side.request('write', {
        ...args,
        id: this._job.staged.id
      });
      this._writtenTo = written;
      this._writtenSignal.emit(written);
    } catch (error) {
      this._acceptError = asError(error);
    }
    this._emit();
  }

  /** Drop the staged export (its files are removed) and go back to the form. */
  async discard(): Promise<void> {
    await this._discardCurrent();
    this._job = { kind: 'idle' };
    this._writtenTo = null;
    this._acceptError = null;
    this._emit();
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._shell.currentChanged.disconnect(this._onCurrentChanged, this);
    this._notebooks.currentChanged.disconnect(this._onCurrentChanged, this);
    this._consoles?.currentChanged.disconnect(this._onCurrentChanged, this);
    NotebookActions.executed.disconnect(this._onExecuted, this);
    this._follow(null);
    Signal.clearData(this);
  }

  private async _discardCurrent(): Promise<void> {
    if (this._job.kind === 'staged' && this._side) {
      const id = this._job.staged.id;
      try {
        await this._side.request('discard', { id });
      } catch (error) {
        console.warn('jupyter_modelsave: discard failed', error);
      }
    }
  }

  private _kernelConnection(): Kernel.IKernelConnection | null {
    return this._panel?.sessionContext.session?.kernel ?? null;
  }

  /** The kernel side of the current kernel, connecting it on first use. */
  private async _ensureSide(): Promise<KernelSide | null> {
    if (this._side && !this._side.isDisposed) {
      return this._sideState.kind === 'ready' ? this._side : null;
    }
    const kernel = this._kernelConnection();
    if (!kernel) {
      this._setSide({ kind: 'none' });
      return null;
    }
    if (kernel.status === 'dead') {
      this._setSide({ kind: 'dead' });
      return null;
    }
    const side = new KernelSide(kernel);
    this._side = side;
    this._setSide({ kind: 'connecting' });
    try {
      const info = await kernel.info;
      const language = info.language_info.name;
      if (language !== 'python') {
        this._setSide({ kind: 'unsupported', language }, side);
        return null;
      }
      this._config ??= await requestAPI<IServerConfig>('config');
      await side.open(this._config);
      this._setSide({ kind: 'ready' }, side);
      return side === this._side ? side : null;
    } catch (error) {
      this._setSide({ kind: 'error', message: asError(error).message }, side);
      return null;
    }
  }

  private _setSide(state: KernelSideState, side?: KernelSide): void {
    if (side && side !== this._side) {
      return; // a newer connection replaced this one
    }
    this._sideState = state;
    this._emit();
  }

  /** Forget the kernel side (kernel changed, restarted or died); reconnect when visible. */
  private _resetSide(): void {
    this._side?.dispose();
    this._side = null;
    this._sideState = { kind: 'none' };
    this._models = null;
    this._options = null;
    if (this._job.kind !== 'idle') {
      // staged files die with the kernel side's process or are dropped by discard
      this._job = { kind: 'idle' };
      this._writtenTo = null;
    }
  }

  /** The main area's current notebook or console, else the one followed, else the trackers'. */
  private _pick(): SessionPanel | null {
    const current = this._shell.currentWidget;
    if (
      (current instanceof NotebookPanel || current instanceof ConsolePanel) &&
      !current.isDisposed
    ) {
      if (this._notebooks.has(current) || this._consoles?.has(current)) {
        return current;
      }
    }
    if (this._panel && !this._panel.isDisposed) {
      return this._panel;
    }
    return (
      this._notebooks.currentWidget ?? this._consoles?.currentWidget ?? null
    );
  }

  private _onCurrentChanged(): void {
    const panel = this._pick();
    if (panel !== this._panel) {
      this._follow(panel);
      this._emit();
      void this.refreshModels();
    }
  }

  private _onExecuted(
    _: unknown,
    args: { notebook: unknown; success: boolean }
  ): void {
    if (this._panel && args.notebook === this._panel.content) {
      void this.refreshModels();
    }
  }

  private _onConsoleExecuted(): void {
    void this.refreshModels();
  }

  private _onKernelChanged(): void {
    this._resetSide();
    this._emit();
    void this.refreshModels();
  }

  private _onStatusChanged(_: ISessionContext, status: Kernel.Status): void {
    if (status === 'restarting' || status === 'autorestarting') {
      this._resetSide();
    } else if (status === 'dead') {
      this._resetSide();
      this._sideState = { kind: 'dead' };
    } else if (status === 'idle' && this._sideState.kind === 'none') {
      void this.refreshModels();
    }
    this._emit();
  }

  /** Move the session listeners from the previous notebook or console to `panel`. */
  private _follow(panel: SessionPanel | null): void {
    if (this._panel instanceof ConsolePanel) {
      this._panel.console.executed.disconnect(this._onConsoleExecuted, this);
    }
    if (this._panel) {
      const old = this._panel.sessionContext;
      old.kernelChanged.disconnect(this._onKernelChanged, this);
      old.statusChanged.disconnect(this._onStatusChanged, this);
      old.connectionStatusChanged.disconnect(this._emit, this);
      old.propertyChanged.disconnect(this._emit, this);
      this._panel.disposed.disconnect(this._onPanelDisposed, this);
    }
    if (panel !== this._panel) {
      void this._discardCurrent();
      this._resetSide();
      this._job = { kind: 'idle' };
      this._selected = null;
    }
    this._panel = panel;
    if (panel) {
      const ctx: ISessionContext = panel.sessionContext;
      ctx.kernelChanged.connect(this._onKernelChanged, this);
      ctx.statusChanged.connect(this._onStatusChanged, this);
      ctx.connectionStatusChanged.connect(this._emit, this);
      ctx.propertyChanged.connect(this._emit, this);
      panel.disposed.connect(this._onPanelDisposed, this);
    }
    if (panel instanceof ConsolePanel) {
      panel.console.executed.connect(this._onConsoleExecuted, this);
    }
  }

  private _onPanelDisposed(): void {
    this._follow(null);
    this._follow(this._pick());
    this._emit();
    void this.refreshModels();
  }

  private _emit(): void {
    if (!this._isDisposed) {
      this._changed.emit();
    }
  }

  private _shell: ILabShell;
  private _notebooks: INotebookTracker;
  private _consoles: IConsoleTracker | null;
  private _panel: SessionPanel | null = null;
  private _health: HealthState = { kind: 'pending' };
  private _config: IServerConfig | null = null;
  private _side: KernelSide | null = null;
  private _sideState: KernelSideState = { kind: 'none' };
  private _models: KernelAPI.IModelInfo[] | null = null;
  private _options: KernelAPI.IOptionsReply | null = null;
  private _selected: string | null = null;
  private _job: JobState = { kind: 'idle' };
  /** The arguments of the last stage, for staging its variants from the review. */
  private _lastStage: KernelAPI.IStageArgs | null = null;
  private _writtenTo: KernelAPI.IWrittenReply | null = null;
  private _acceptError: KernelAPI.IErrorInfo | null = null;
  private _visible = false;
  private _isDisposed = false;
  private _changed = new Signal<this, void>(this);
  private _writtenSignal = new Signal<this, KernelAPI.IWrittenReply>(this);
}

export namespace ModelSaveModel {
  export interface IOptions {
    /** The shell whose current main-area widget the sidebar follows. */
    shell: ILabShell;
    notebooks: INotebookTracker;
    /** Consoles are followed too when JupyterLab has them. */
    consoles: IConsoleTracker | null;
  }
}

function asError(error: unknown): KernelAPI.IErrorInfo {
  if (error instanceof KernelSideError) {
    return { type: error.type, message: error.message };
  }
  return { type: 'Error', message: String(error) };
}
