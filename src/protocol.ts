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
    outputs: IOutputDiff[];
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
    inputs: ITensorSpec[];
    outputs: ITensorSpec[];
    file: string;
    graph: string | null;
    folder_artifact: boolean;
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
    op: 'models' | 'options' | 'stage' | 'write' | 'discard';
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
    write: { args: IWriteArgs; reply: IWrittenReply };
    discard: { args: IDiscardArgs; reply: IDiscardedReply };
  }

  export type Op = keyof IOperations;
}
