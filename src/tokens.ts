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

/** The Comm target of the kernel side (`jupyter_modelsave/kernel.py`). */
export const COMM_TARGET = 'jupyter_modelsave';

/**
 * JSON types of the kernel side's replies (mirrors of the Python `to_dict()`s).
 */
export namespace KernelAPI {
  export interface ITensorSpec {
    name: string;
    shape: number[];
    dtype: string;
    device: string;
  }

  /** `jms.ModelInfo.to_dict()`. */
  export interface IModelInfo {
    name: string;
    class_name: string;
    num_params: number;
    size_bytes: number;
    device: string;
    dtype: string;
    training: boolean;
    /** For PyTorch, the last recorded call; for Keras, the declared inputs (None as 2). */
    last_input: ITensorSpec[] | null;
    /** "torch", "keras" or "tensorflow" (a tf.Module). */
    framework: string;
    /** The format names that apply to this model. */
    formats: string[];
    /** "sharded over N ranks" when the weights are DTensors (FSDP2, tensor parallel). */
    sharding: string | null;
    /** Without a recorded call: the input its first layer implies (`core/example_guess.py`). */
    guessed_input: ITensorSpec | null;
    /** ...and the Python expression that makes it, e.g. `torch.randn(1, 3, 224, 224)`. */
    guessed_expression: string | null;
    /** Whether `generation=True` applies (a transformers language model; older kernels: absent). */
    can_generate?: boolean;
  }

  export interface IModels {
    models: IModelInfo[];
  }

  /** What the options form offers. */
  export interface IOptions {
    version: string;
    formats: string[];
    exporters: string[];
    /** exporter -> [lowest, highest] opset. */
    opsets: { [exporter: string]: [number, number] };
    /** float dtype -> [atol, rtol]. */
    tolerances: { [dtype: string]: [number, number] };
    /** format -> the precisions `stage` takes here for a float32 PyTorch model. */
    precisions?: { [format: string]: string[] };
  }

  /** Arguments of the `stage` operation. */
  export interface IStageArgs {
    model: string;
    format: string;
    exporter?: string;
    opset?: number | null;
    /** input name -> { dim: axis name }. */
    dynamic_axes?: { [input: string]: { [dim: string]: string } };
    /** A Python expression, or null for the last recorded call. */
    example?: string | null;
    atol?: number | null;
    rtol?: number | null;
    name?: string;
    /** ONNX with past key values, checked on a greedy loop. */
    generation?: boolean;
    /** "fp32", "fp16", "bf16", "int8"; null: the model's own. */
    precision?: string | null;
    /** Measure the latency of a graph artifact (default true). */
    latency?: boolean;
  }

  export interface IOutputDiff {
    name: string;
    shape: number[];
    max_abs: number | string;
    max_rel: number | string;
    mismatch_fraction: number;
    cosine: number | string;
    min_atol: number | string;
    top1_agreement: number | null;
    shape_mismatch: string | null;
    passed: boolean;
  }

  export interface IProbe {
    name: string;
    passed: boolean;
    outputs: IOutputDiff[];
  }

  /** One compared module call (`LayerDiff`): where the artifact starts to differ. */
  export interface ILayerDiff {
    /** Qualified name in the live model; "" for the model itself. */
    module: string;
    class_name: string;
    /** Which call of the module (0: the first). */
    call: number;
    shape: number[];
    max_abs: number | string;
    max_rel: number | string;
    cosine: number | string;
    mismatch_fraction: number;
    passed: boolean;
    /** `file:line` of the module's forward code, when known. */
    source: string | null;
    /** The text of that line. */
    code: string | null;
    /** Names of the ONNX nodes that compute it (empty for other formats). */
    nodes: string[];
  }

  /** One greedy loop of a generation export against the live model's generate(). */
  export interface IGreedyRun {
    name: string;
    prompt_lengths: number[];
    live_tokens: number[][];
    artifact_tokens: number[][];
    steps_compared: number;
    passed: boolean;
    first_difference: number | null;
    near_tie: boolean;
  }

  /** `ParityReport.to_dict()`. */
  export interface IReport {
    passed: boolean;
    atol: number;
    rtol: number;
    probes: IProbe[];
    reference_device: string;
    tf32: boolean;
    diagnosis: string[];
    kind: string;
    outputs: IOutputDiff[];
    /** The first module whose output differs (when parity failed, or on request). */
    first_divergence?: ILayerDiff | null;
    /** Every compared module call, in the order calls finish. */
    layers?: ILayerDiff[];
    /** What the localization found, in plain words. */
    localization?: string | null;
    /** Generation exports: greedy steps and runs (live and artifact tokens side by side). */
    steps?: number;
    generation?: IGreedyRun[];
    /** The precision the report judged (a variant's, or the model's own). */
    precision?: string;
    /** A variant's task-level agreement, per output. */
    agreement?: {
      element_wise: boolean;
      outputs: {
        [output: string]: {
          metric: 'top1' | 'cosine' | 'shape';
          value: number | string | null;
          threshold: number | null;
          passed: boolean;
        };
      };
    } | null;
  }

  /** How a precision variant was made (`StagedExport.variant`). */
  export interface IVariant {
    precision: string;
    from: string;
    method: string;
    fp32_size_bytes: number | null;
    size_ratio: number | null;
  }

  /** `StagedExport.latency`. */
  export interface ILatency {
    p50_ms: number;
    p95_ms: number;
    eager_p50_ms: number;
    eager_p95_ms: number;
    device: string;
    runtime: string;
    batch: number | null;
    runs: number;
    eager_runs: number;
  }

  /** `StagedExport.diff(folder)`: against the newest artifact of the same name there. */
  export interface IDiff {
    previous_version: string;
    /** Relative to the Jupyter root. */
    previous_path: string;
    previous_sha256: string;
    size_ratio: number | null;
    signature_changed: {
      [field: string]: { before: unknown; after: unknown };
    };
    max_abs: number | string | null;
    cosine: number | string | null;
    compared: 'outputs' | 'weights' | null;
    notes: string[];
    warnings: string[];
  }

  /** Arguments of `diff`. */
  export interface IDiffArgs {
    id: string;
    folder: string;
  }

  /** Reply of `stage`. */
  export interface IStaged {
    id: string;
    name: string;
    format: string;
    exporter: string;
    opset: number | null;
    size_bytes: number;
    sha256: string;
    warnings: string[];
    report: IReport | null;
    /** The artifact's precision ("fp32", "fp16", "bf16", "int8"). */
    precision?: string;
    variant?: IVariant | null;
    latency?: ILatency | null;
    inputs: ITensorSpec[];
    outputs: ITensorSpec[];
    /** File names in the staging folder. */
    file: string;
    graph: string | null;
    folder_artifact: boolean;
  }

  /** Arguments of `write`. */
  export interface IWriteArgs {
    id: string;
    folder: string;
    name?: string;
    version?: string;
    overwrite?: boolean;
    allow_mismatch?: boolean;
  }

  /** Reply of `write`: paths relative to the server root. */
  export interface IWritten {
    path: string;
    manifest: string;
  }

  export interface IError {
    type: string;
    message: string;
  }
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
  | { kind: 'staged'; staged: KernelAPI.IStaged }
  | { kind: 'error'; error: KernelAPI.IError };
