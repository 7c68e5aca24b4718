/**
 * Shared constants and types of the jupyter_modelsave frontend.
 */

/** The plugin id (also the settings/state key of the sidebar). */
export const PLUGIN_ID = 'jupyter_modelsave:plugin';

/** The DOM id of the sidebar widget. */
export const SIDEBAR_ID = 'jupyter-modelsave-sidebar';

/** The URL namespace of the server extension: `<base_url>/modelsave/...`. */
export const API_NAMESPACE = 'modelsave';

/** Body of `GET <base_url>/modelsave/health`. */
export interface IHealth {
  status: string;
  version: string;
}

/** What the sidebar knows about the kernel of the current notebook. */
export interface IKernelState {
  /** Path of the notebook, relative to the server root. */
  notebookPath: string;
  /** Kernel display name, e.g. "Python 3 (ipykernel)" or "No Kernel". */
  displayName: string;
  /** Kernel display status, e.g. "idle", "busy", "starting", "unknown". */
  status: string;
}

/** The server extension check: pending, answered, or failed. */
export type HealthState =
  | { kind: 'pending' }
  | { kind: 'ok'; health: IHealth }
  | { kind: 'error'; message: string };
