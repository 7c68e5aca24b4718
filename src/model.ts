import { ISessionContext } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { requestAPI } from './request';
import { HealthState, IHealth, IKernelState } from './tokens';

/**
 * State of the Model Save sidebar.
 *
 * Follows the session of the current notebook (`INotebookTracker.currentWidget`)
 * and the health of the server extension; emits `changed` on every update.
 */
export class ModelSaveModel implements IDisposable {
  constructor(tracker: INotebookTracker) {
    this._tracker = tracker;
    tracker.currentChanged.connect(this._onCurrentChanged, this);
    this._follow(tracker.currentWidget);
  }

  /** Emitted whenever the kernel state or the health state changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The current notebook's kernel, or `null` when no notebook is open. */
  get kernel(): IKernelState | null {
    const panel = this._panel;
    if (!panel || panel.isDisposed) {
      return null;
    }
    const ctx = panel.sessionContext;
    return {
      notebookPath: panel.context.path,
      displayName: ctx.kernelDisplayName,
      status: ctx.kernelDisplayStatus
    };
  }

  /** The last answer of `GET modelsave/health`. */
  get health(): HealthState {
    return this._health;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
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

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._tracker.currentChanged.disconnect(this._onCurrentChanged, this);
    this._follow(null);
    Signal.clearData(this);
  }

  private _onCurrentChanged(
    _: INotebookTracker,
    panel: NotebookPanel | null
  ): void {
    this._follow(panel);
    this._changed.emit();
  }

  /** Move the session listeners from the previous notebook to `panel`. */
  private _follow(panel: NotebookPanel | null): void {
    if (this._panel) {
      const old = this._panel.sessionContext;
      old.kernelChanged.disconnect(this._emit, this);
      old.statusChanged.disconnect(this._emit, this);
      old.connectionStatusChanged.disconnect(this._emit, this);
      old.propertyChanged.disconnect(this._emit, this);
      this._panel.disposed.disconnect(this._onPanelDisposed, this);
    }
    this._panel = panel;
    if (panel) {
      const ctx: ISessionContext = panel.sessionContext;
      ctx.kernelChanged.connect(this._emit, this);
      ctx.statusChanged.connect(this._emit, this);
      ctx.connectionStatusChanged.connect(this._emit, this);
      ctx.propertyChanged.connect(this._emit, this);
      panel.disposed.connect(this._onPanelDisposed, this);
    }
  }

  private _onPanelDisposed(): void {
    this._follow(null);
    this._changed.emit();
  }

  private _emit(): void {
    this._changed.emit();
  }

  private _tracker: INotebookTracker;
  private _panel: NotebookPanel | null = null;
  private _health: HealthState = { kind: 'pending' };
  private _isDisposed = false;
  private _changed = new Signal<this, void>(this);
}
