/**
 * Shared constants and types of the jupyter_modelsave frontend (the kernel side's JSON types are
 * in `protocol.ts`).
 */

import { KernelAPI } from './protocol';

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

/** What the sidebar knows about the kernel of the current notebook or console. */
export interface IKernelState {
  /** Path of the notebook or console session, relative to the server root. */
  path: string;
  /** What the header shows: the notebook's file name or the console's name ("Console 1"). */
  name: string;
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

/** Body of `GET <base_url>/modelsave/config`: folders the kernel side needs. */
export interface IServerConfig {
  staging_dir: string;
  root_dir: string;
}

/** The kernel side of the current notebook. */
export type KernelSideState =
  | { kind: 'none' }
  | { kind: 'connecting' }
  | { kind: 'ready' }
  | { kind: 'unsupported'; language: string }
  | { kind: 'dead' }
  | { kind: 'error'; message: string };

/** The export in progress or under review. */
export type JobState =
  | { kind: 'idle' }
  | { kind: 'staging'; step: string; fraction: number }
  | { kind: 'staged'; staged: KernelAPI.IStagedReply }
  | { kind: 'error'; error: KernelAPI.IErrorInfo };
