/**
 * The Comm protocol between the sidebar and the kernel side: the TypeScript mirror of
 * `jupyter_modelsave/protocol.py`, which defines it. Every Python type `X` there is `IX` here,
 * with the same fields and JSON types; `tests/test_protocol.py` fails when the two drift.
 */

/** The Comm target of the kernel side. */
export const COMM_TARGET = 'jupyter_modelsave';

export namespace KernelAPI {
  export interface ITensorSpec {
    name: string;
    shape: number[];
    dtype: string;
    device: string;
  }

  export interface IAxisRow {
    input: string;
    dim: number;
    size: number;
    name: string;
  }

  export interface IModelInfo {
    name: string;
    class_name: string;
    num_params: number;
    size_bytes: number;
    device: string;
    dtype: string;
    training: boolean;
    last_input: ITensorSpec[] | null;
    framework: string;
    formats: string[];
    sharding: string | null;
    guessed_input: ITensorSpec | null;
    guessed_expression: string | null;
    /** `generation=True` applies (a transformers language model). */
    can_generate: boolean;
    /** Precision variants can be staged from it (the format's `precisions`). */
    variants: boolean;
    axes: IAxisRow[];
  }

  export interface IFormatInfo {
    extension: string;
    description: string;
    kind: 'graph' | 'weights';
    needs_inputs: boolean;
    dynamic_axes: boolean;
    exporters: string[];
    opsets: { [key: string]: number[] };
    folder: boolean;
    graph_view: boolean;
    /** What `stage(precision=)` makes on this machine (`jms.precisions`). */
    precisions: string[];
    /** Holds `generation=True` exports. */
    generation: boolean;
  }

  export interface IFrameworkInfo {
    label: string;
    example_hint: string;
    records_calls: boolean;
    formats: { [key: string]: IFormatInfo };
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
    peak: number | string | null;
    scaled_atol: number | string | null;
  }

  export interface IProbe {
    name: string;
    passed: boolean;
    outputs: IOutputDiff[];
  }

  /** One compared module call: where the artifact starts to differ. */
  export interface ILayerDiff {
    /** Qualified name in the live model; "" for the model itself. */
    module: string;
    class_name: string;
    /** Which call of the module, counted from 0. */
    call: number;
    shape: number[];
    max_abs: number | string;
    max_rel: number | string;
    cosine: number | string;
    mismatch_fraction: number;
    passed: boolean;
    /** `file:line` of the module's forward code, when known. */
    source: string | null;
    code: string | null;
    /** The ONNX nodes that compute it (empty for other formats). */
    nodes: string[];
  }

  /** A precision variant's task-level agreement on one output. */
  export interface IOutputAgreement {
    metric: 'top1' | 'cosine' | 'shape';
    value: number | string | null;
    threshold: number | null;
    passed: boolean;
    rows?: number;
  }

  export interface IAgreement {
    element_wise: boolean;
    outputs: { [key: string]: IOutputAgreement };
  }

  /** A generation export's greedy loop against the live model's generate(). */
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

  export interface IReport {
    passed: boolean;
    atol: number;
    rtol: number;
    probes: IProbe[];
    reference_device: string;
    tf32: boolean;
    diagnosis: string[];
    kind: 'outputs' | 'weights';
    value_conversions: string[];
    /** The localization: the first module whose output differs, every compared call, in words. */
    first_divergence: ILayerDiff | null;
    layers: ILayerDiff[];
    localization: string | null;
    /** The precision judged (a variant's, or the model's own). */
    precision: string;
    agreement: IAgreement | null;
    outputs: IOutputDiff[];
    /** Generation exports: the greedy steps, and the runs. */
    steps?: number;
    generation?: IGreedyRun[];
  }

  /** How a precision variant was made. */
  export interface IVariant {
    precision: string;
    from: string;
    method: string;
    fp32_size_bytes: number | null;
    size_ratio: number | null;
  }

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

  export type IModelsArgs = Record<string, never>;

  export interface IModelsReply {
    models: IModelInfo[];
  }

  export type IOptionsArgs = Record<string, never>;

  export interface IOptionsReply {
    version: string;
    frameworks: { [key: string]: IFrameworkInfo };
    tolerances: { [key: string]: number[] };
  }

  export interface IStageArgs {
    model: string;
    format?: string | null;
    exporter?: string | null;
    opset?: number | null;
    atol?: number | null;
    rtol?: number | null;
    name?: string | null;
    example?: string | null;
    dynamic_axes?: {
      [key: string]: { [key: string]: string } | number[];
    } | null;
    /** ONNX with past key values, checked on a greedy loop. */
    generation?: boolean;
    /** "fp32", "fp16", "bf16", "int8"; null: the model's own. */
    precision?: string | null;
    /** Measure a graph artifact's latency (default true). */
    latency?: boolean;
  }

  export interface IStagedReply {
    id: string;
    name: string;
    format: string;
    exporter: string;
    opset: number | null;
    size_bytes: number;
    sha256: string;
    warnings: string[];
    report: IReport | null;
    precision: string;
    variant: IVariant | null;
    latency: ILatency | null;
    inputs: ITensorSpec[];
    outputs: ITensorSpec[];
    file: string;
    graph: string | null;
    folder_artifact: boolean;
  }

  export interface IDiffArgs {
    id: string;
    /** Relative to the server's root; null: the root. */
    folder?: string | null;
  }

  export interface ISignatureChange {
    before: unknown;
    after: unknown;
  }

  /** The staged export against the newest artifact of the same name in a folder. */
  export interface IDiff {
    previous_version: string;
    /** Relative to the server's root. */
    previous_path: string;
    previous_sha256: string;
    size_ratio: number | null;
    signature_changed: { [key: string]: ISignatureChange };
    max_abs: number | string | null;
    cosine: number | string | null;
    compared: 'outputs' | 'weights' | null;
    /** Where the least cosine was seen. */
    worst?: string;
    notes: string[];
    warnings: string[];
  }

  export interface IDiffReply {
    diff: IDiff | null;
  }

  export interface IWriteArgs {
    id: string;
    folder?: string | null;
    name?: string | null;
    version?: string | null;
    overwrite?: boolean;
    allow_mismatch?: boolean;
  }

  export interface IWrittenReply {
    path: string;
    manifest: string;
  }

  export interface IDiscardArgs {
    id: string;
  }

  export interface IDiscardedReply {
    discarded: boolean;
  }

  export interface IRequest {
    id: string | number;
    op: 'models' | 'options' | 'stage' | 'diff' | 'write' | 'discard';
    args: { [key: string]: unknown };
  }

  export interface IErrorInfo {
    type: string;
    message: string;
  }

  export interface IReadyEvent {
    event: 'ready';
    version: string;
  }

  export interface IProgressEvent {
    id: string | number | null;
    event: 'progress';
    step: string;
    fraction: number;
  }

  export interface IReplyEvent {
    id: string | number | null;
    event: 'reply';
    ok: boolean;
    result?: unknown;
    error?: IErrorInfo;
  }

  /** Each operation's arguments and reply (`protocol.OPERATIONS`). */
  export interface IOperations {
    models: { args: IModelsArgs; reply: IModelsReply };
    options: { args: IOptionsArgs; reply: IOptionsReply };
    stage: { args: IStageArgs; reply: IStagedReply };
    diff: { args: IDiffArgs; reply: IDiffReply };
    write: { args: IWriteArgs; reply: IWrittenReply };
    discard: { args: IDiscardArgs; reply: IDiscardedReply };
  }

  export type Op = keyof IOperations;
}
