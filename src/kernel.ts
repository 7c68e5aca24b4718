import { Kernel, KernelMessage } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { PromiseDelegate } from '@lumino/coreutils';

import { COMM_TARGET, KernelAPI } from './protocol';
import { IServerConfig } from './tokens';

/** Called with the engine's progress while a request runs. */
export type ProgressCallback = (step: string, fraction: number) => void;

/** An error answered by the kernel side (`type` is the Python class name). */
export class KernelSideError extends Error {
  constructor(
    readonly type: string,
    message: string
  ) {
    super(message);
  }
}

interface IPending {
  delegate: PromiseDelegate<any>;
  onProgress?: ProgressCallback;
}

/**
 * The sidebar's connection to `jupyter_modelsave/kernel.py` in one kernel.
 *
 * `open` installs the kernel side by a silent, history-free execute of an import, then opens a
 * Comm; `request` sends `{id, op, args}` and resolves with the reply's result (progress events
 * go to `onProgress`). The connection dies with its kernel (restart, shutdown): the model then
 * makes a new one.
 */
export class KernelSide implements IDisposable {
  constructor(kernel: Kernel.IKernelConnection) {
    this._kernel = kernel;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** Install the kernel side and open its Comm. */
  async open(config: IServerConfig): Promise<void> {
    const args = [
      `staging_dir=${pyString(config.staging_dir)}`,
      `root_dir=${pyString(config.root_dir)}`
    ].join(', ');
    const code =
      'import jupyter_modelsave.kernel as _jms_kernel; ' +
      `_jms_kernel.install(${args})`;
    const future = this._kernel.requestExecute({
      code,
      silent: true,
      store_history: false,
      allow_stdin: false
    });
    let failure = '';
    future.onIOPub = msg => {
      if (KernelMessage.isErrorMsg(msg)) {
        failure = `${msg.content.ename}: ${msg.content.evalue}`;
      }
    };
    const reply = await future.done;
    if (reply.content.status !== 'ok') {
      if (!failure && reply.content.status === 'error') {
        failure = `${reply.content.ename}: ${reply.content.evalue}`;
      }
      throw new KernelSideError('InstallError', failure || 'install failed');
    }
    const ready = new PromiseDelegate<void>();
    const comm = this._kernel.createComm(COMM_TARGET);
    comm.onMsg = msg => {
      const data = msg.content.data as any;
      if (data?.event === 'ready') {
        ready.resolve();
      } else {
        this._onMessage(data);
      }
    };
    comm.onClose = () => this.dispose();
    this._comm = comm;
    comm.open({});
    await ready.promise;
  }

  /** Run one operation of the kernel side (its arguments and reply typed by `protocol.ts`). */
  request<K extends KernelAPI.Op>(
    op: K,
    args: KernelAPI.IOperations[K]['args'],
    onProgress?: ProgressCallback
  ): Promise<KernelAPI.IOperations[K]['reply']> {
    if (!this._comm || this._isDisposed) {
      return Promise.reject(
        new KernelSideError('Disconnected', 'The kernel side is not connected.')
      );
    }
    const id = `r${++this._counter}`;
    const delegate = new PromiseDelegate<KernelAPI.IOperations[K]['reply']>();
    this._pending.set(id, { delegate, onProgress });
    this._comm.send({ id, op, args: args as any });
    return delegate.promise;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    for (const pending of this._pending.values()) {
      pending.delegate.reject(
        new KernelSideError(
          'Disconnected',
          'The kernel stopped or restarted before answering.'
        )
      );
    }
    this._pending.clear();
    // Close the Comm only on a live kernel: a restarting one has dropped it already, and a
    // message queued during a restart would be the first thing the new kernel receives.
    const live =
      this._kernel.status === 'idle' || this._kernel.status === 'busy';
    if (
      live &&
      this._comm &&
      !this._comm.isDisposed &&
      !this._kernel.isDisposed
    ) {
      try {
        this._comm.close();
      } catch {
        // the kernel is gone already
      }
    }
    this._comm = null;
  }

  private _onMessage(
    data: KernelAPI.IProgressEvent | KernelAPI.IReplyEvent
  ): void {
    const pending = this._pending.get(String(data?.id));
    if (!pending) {
      return;
    }
    if (data.event === 'progress') {
      pending.onProgress?.(String(data.step), Number(data.fraction));
      return;
    }
    this._pending.delete(String(data.id));
    if (data.ok) {
      pending.delegate.resolve(data.result);
    } else {
      const error = data.error as KernelAPI.IErrorInfo;
      pending.delegate.reject(new KernelSideError(error.type, error.message));
    }
  }

  private _kernel: Kernel.IKernelConnection;
  private _comm: Kernel.IComm | null = null;
  private _pending = new Map<string, IPending>();
  private _counter = 0;
  private _isDisposed = false;
}

/** A Python string literal (JSON strings are valid Python strings). */
function pyString(value: string): string {
  return JSON.stringify(value);
}
