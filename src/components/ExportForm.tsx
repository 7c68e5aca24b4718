import { TranslationBundle } from '@jupyterlab/translation';
import { HTMLSelect } from '@jupyterlab/ui-components';
import * as React from 'react';

import { formatShapes } from '../format';
import {
  isTorch,
  modelFormats,
  offersGeneration,
  takesDynamicAxes,
  WEIGHT_FORMATS
} from '../frameworks';
import { KernelAPI } from '../tokens';

export interface IExportFormProps {
  model: KernelAPI.IModelInfo;
  options: KernelAPI.IOptions;
  disabled: boolean;
  onStage: (args: KernelAPI.IStageArgs) => void;
  trans: TranslationBundle;
}

/** One dimension of one input in the dynamic-axes editor. */
interface IAxisRow {
  input: string;
  dim: number;
  size: number;
  enabled: boolean;
  name: string;
}

interface IFormState {
  format: string;
  exporter: string;
  opset: string;
  axes: IAxisRow[];
  exampleMode: 'last' | 'expression';
  expression: string;
  /** The expression guessed from the first layer that the form was filled with ('' if none). */
  guess: string;
  atol: string;
  rtol: string;
  name: string;
  /** ONNX with past key values (offered for models that can generate). */
  generation: boolean;
  /** '' : the model's own precision. */
  precision: string;
}

type Errors = Partial<Record<string, string>>;

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$/;

/** The inputs the form starts from: the last recorded call, else the guess from the first layer. */
function exampleSpecs(model: KernelAPI.IModelInfo): KernelAPI.ITensorSpec[] {
  return model.last_input ?? (model.guessed_input ? [model.guessed_input] : []);
}

/** One row per input dimension; rows of the same input and dimension keep their tick and name. */
function axisRows(
  specs: KernelAPI.ITensorSpec[],
  old: IAxisRow[] = []
): IAxisRow[] {
  const axes: IAxisRow[] = [];
  for (const spec of specs) {
    spec.shape.forEach((size, dim) => {
      const kept = old.find(r => r.input === spec.name && r.dim === dim);
      axes.push({
        input: spec.name,
        dim,
        size,
        enabled: kept?.enabled ?? false,
        name: kept?.name ?? (dim === 0 ? 'batch' : `${spec.name}_dim${dim}`)
      });
    });
  }
  return axes;
}

/**
 * The form's first state, from the model's last recorded call; without one, the example input
 * guessed from its first layer fills the expression (editable), so Stage works without typing.
 */
function initialState(
  model: KernelAPI.IModelInfo,
  options: KernelAPI.IOptions
): IFormState {
  const formats = modelFormats(model, options.formats);
  return {
    format: formats.includes('onnx') ? 'onnx' : formats[0],
    exporter: 'auto',
    opset: '',
    axes: axisRows(exampleSpecs(model)),
    exampleMode: model.last_input ? 'last' : 'expression',
    expression: model.last_input ? '' : (model.guessed_expression ?? ''),
    guess: model.last_input ? '' : (model.guessed_expression ?? ''),
    atol: '',
    rtol: '',
    name: SAFE_NAME.test(model.name) ? model.name : 'model',
    generation: false,
    precision: ''
  };
}

/**
 * When a call is recorded for a model whose form still shows the guess (or nothing), switch to
 * "Last call" and take the call's dimensions; an expression the user typed stays.
 */
function useLastCall(
  model: KernelAPI.IModelInfo,
  setState: React.Dispatch<React.SetStateAction<IFormState>>
): void {
  const signature = JSON.stringify(model.last_input);
  React.useEffect(() => {
    if (!model.last_input) {
      return;
    }
    const specs = model.last_input;
    setState(s => {
      if (s.exampleMode === 'last') {
        return { ...s, axes: axisRows(specs, s.axes) };
      }
      const typed = s.expression.trim();
      if (typed !== '' && typed !== s.guess) {
        return s; // the user's own expression
      }
      return {
        ...s,
        exampleMode: 'last',
        expression: '',
        guess: '',
        axes: axisRows(specs, s.axes)
      };
    });
  }, [signature]);
}

/** Whether the form asks for a generation export (offered and ticked). */
function generates(model: KernelAPI.IModelInfo, state: IFormState): boolean {
  return state.generation && offersGeneration(model, state.format);
}

/** The precision variants the form offers for a format: the kernel's list, when the model is a
 * float32 PyTorch model (variants are made from one), less fp32 (its own). */
export function variantPrecisions(
  model: KernelAPI.IModelInfo,
  options: KernelAPI.IOptions,
  format: string
): string[] {
  const float32 = ['float32', 'none'].includes(model.dtype.split(',')[0]);
  if (!isTorch(model) || !float32 || model.sharding) {
    return [];
  }
  return (options.precisions?.[format] ?? []).filter(p => p !== 'fp32');
}

/** Every invalid field with the reason; empty when the form can be staged. */
export function validate(
  state: IFormState,
  options: KernelAPI.IOptions,
  trans: TranslationBundle,
  generation = false
): Errors {
  const errors: Errors = {};
  if (state.opset !== '') {
    const [low, high] = options.opsets[state.exporter] ?? [0, 0];
    const opset = Number(state.opset);
    if (!Number.isInteger(opset) || opset < low || opset > high) {
      errors.opset = trans.__('Choose an opset from %1 to %2.', low, high);
    }
  }
  state.axes.forEach(row => {
    if (row.enabled && !IDENTIFIER.test(row.name)) {
      errors[`axis-${row.input}-${row.dim}`] = trans.__(
        'An axis name is an identifier such as batch or seq_len.'
      );
    }
  });
  // a generation export without a prompt uses a random one
  if (
    state.exampleMode === 'expression' &&
    !state.expression.trim() &&
    !generation
  ) {
    errors.expression = trans.__(
      'Give a Python expression, e.g. torch.randn(1, 3, 224, 224).'
    );
  }
  for (const key of ['atol', 'rtol'] as const) {
    const text = state[key].trim();
    if (text !== '' && !(Number.isFinite(Number(text)) && Number(text) >= 0)) {
      errors[key] = trans.__('A number ≥ 0 such as 1e-4.');
    }
  }
  if (!SAFE_NAME.test(state.name)) {
    errors.name = trans.__(
      "Letters, digits, '_', '.', '+' or '-', starting with a letter or digit."
    );
  }
  return errors;
}

/** The example expression to send: null for the last call, and for a guess a weight format
 * does not need (weights are saved without running the model). */
function exampleArg(
  model: KernelAPI.IModelInfo,
  state: IFormState
): string | null {
  if (state.exampleMode !== 'expression') {
    return null;
  }
  const guessed = state.guess !== '' && state.expression.trim() === state.guess;
  if (guessed && isTorch(model) && WEIGHT_FORMATS.includes(state.format)) {
    return null;
  }
  return state.expression;
}

/** The `stage` arguments of a valid form. */
function stageArgs(
  model: KernelAPI.IModelInfo,
  options: KernelAPI.IOptions,
  state: IFormState
): KernelAPI.IStageArgs {
  const args: KernelAPI.IStageArgs = {
    model: model.name,
    format: state.format,
    name: state.name,
    example: exampleArg(model, state),
    atol: state.atol.trim() ? Number(state.atol) : null,
    rtol: state.rtol.trim() ? Number(state.rtol) : null
  };
  if (state.format === 'onnx') {
    if (isTorch(model)) {
      args.exporter = state.exporter;
    }
    args.opset = state.opset ? Number(state.opset) : null;
  }
  if (
    !generates(model, state) &&
    variantPrecisions(model, options, state.format).includes(state.precision)
  ) {
    args.precision = state.precision;
  }
  if (generates(model, state)) {
    args.generation = true; // the graphs' axes are fixed: no dynamic axes
  } else if (takesDynamicAxes(model, state.format)) {
    const axes: KernelAPI.IStageArgs['dynamic_axes'] = {};
    for (const row of state.axes.filter(r => r.enabled)) {
      axes[row.input] = { ...axes[row.input], [String(row.dim)]: row.name };
    }
    if (Object.keys(axes).length > 0) {
      args.dynamic_axes = axes;
    }
  }
  return args;
}

/**
 * The export options of the picked model: the formats that apply to it (its framework's);
 * ONNX options (exporter for PyTorch, opset) show for ONNX, dynamic axes for the formats that
 * take them; invalid values are refused in the form, with the reason.
 */
export function ExportForm({
  model,
  options,
  disabled,
  onStage,
  trans
}: IExportFormProps): JSX.Element {
  const [state, setState] = React.useState(() => initialState(model, options));
  useLastCall(model, setState);
  const generation = generates(model, state);
  const errors = validate(state, options, trans, generation);
  const valid = Object.keys(errors).length === 0;
  const update = (patch: Partial<IFormState>) =>
    setState(s => ({ ...s, ...patch }));
  const setAxis = (index: number, patch: Partial<IAxisRow>) =>
    setState(s => ({
      ...s,
      axes: s.axes.map((row, i) => (i === index ? { ...row, ...patch } : row))
    }));
  const [low, high] = options.opsets[state.exporter] ?? [0, 0];
  const dtype = model.dtype.split(',')[0];
  const tolerances = options.tolerances[dtype] ??
    options.tolerances.float32 ?? [1e-4, 1e-3];
  const onnx = state.format === 'onnx';
  const torch = isTorch(model);
  const dynamic = takesDynamicAxes(model, state.format) && !generation;
  const precisions = variantPrecisions(model, options, state.format);
  const id = (field: string) => `jp-ModelSave-${model.name}-${field}`;

  return (
    <form
      className="jp-ModelSave-form"
      aria-label={trans.__('Export options')}
      onSubmit={event => {
        event.preventDefault();
        if (valid && !disabled) {
          onStage(stageArgs(model, options, state));
        }
      }}
    >
      <Field id={id('format')} label={trans.__('Format')}>
        <HTMLSelect
          id={id('format')}
          value={state.format}
          onChange={e => update({ format: e.target.value })}
          options={modelFormats(model, options.formats)}
        />
      </Field>

      {precisions.length > 0 && (
        <Field
          id={id('precision')}
          label={trans.__('Precision')}
          hint={trans.__(
            'A variant, checked against the live model with tolerances by precision.'
          )}
        >
          <HTMLSelect
            id={id('precision')}
            value={precisions.includes(state.precision) ? state.precision : ''}
            onChange={e => update({ precision: e.target.value })}
            options={[
              { value: '', label: trans.__('model’s own (fp32)') },
              ...precisions.map(p => ({ value: p, label: p }))
            ]}
          />
        </Field>
      )}

      {onnx && torch && (
        <Field
          id={id('exporter')}
          label={trans.__('Exporter')}
          hint={trans.__('auto: dynamo, falling back to TorchScript.')}
        >
          <HTMLSelect
            id={id('exporter')}
            value={state.exporter}
            onChange={e => update({ exporter: e.target.value })}
            options={options.exporters}
          />
        </Field>
      )}
      {onnx && (
        <Field
          id={id('opset')}
          label={trans.__('Opset')}
          hint={trans.__(
            'This kernel supports %1 to %2; default: the exporter’s.',
            low,
            high
          )}
          error={errors.opset}
        >
          <HTMLSelect
            id={id('opset')}
            value={state.opset}
            aria-invalid={!!errors.opset}
            onChange={e => update({ opset: e.target.value })}
            options={[
              { value: '', label: trans.__('default') },
              ...range(low, high).map(v => ({
                value: String(v),
                label: String(v)
              }))
            ]}
          />
        </Field>
      )}
      {offersGeneration(model, state.format) && (
        <div className="jp-ModelSave-generation">
          <label>
            <input
              type="checkbox"
              checked={state.generation}
              onChange={e => update({ generation: e.target.checked })}
            />
            {trans.__('For generation (with cache)')}
          </label>
          <small className="jp-ModelSave-hint">
            {trans.__(
              'Past key values in, present out; checked on a greedy loop against generate().'
            )}
          </small>
        </div>
      )}
      {dynamic && (
        <fieldset className="jp-ModelSave-axes">
          <legend>{trans.__('Dynamic axes')}</legend>
          {state.axes.length === 0 ? (
            <small className="jp-ModelSave-hint">
              {trans.__(
                'Call the model once in the notebook to edit its dynamic axes.'
              )}
            </small>
          ) : (
            state.axes.map((row, i) => {
              const key = `axis-${row.input}-${row.dim}`;
              return (
                <div className="jp-ModelSave-axis" key={key}>
                  <input
                    type="checkbox"
                    id={id(key)}
                    checked={row.enabled}
                    onChange={e => setAxis(i, { enabled: e.target.checked })}
                  />
                  <label htmlFor={id(key)}>
                    {trans.__('%1 dim %2 (%3)', row.input, row.dim, row.size)}
                  </label>
                  <input
                    type="text"
                    className="jp-mod-styled"
                    aria-label={trans.__(
                      'Axis name of %1 dim %2',
                      row.input,
                      row.dim
                    )}
                    value={row.name}
                    disabled={!row.enabled}
                    aria-invalid={!!errors[key]}
                    onChange={e => setAxis(i, { name: e.target.value })}
                  />
                  {errors[key] && (
                    <small className="jp-ModelSave-error">{errors[key]}</small>
                  )}
                </div>
              );
            })
          )}
          <small className="jp-ModelSave-hint">
            {trans.__('Checked dimensions may change size at inference.')}
          </small>
        </fieldset>
      )}

      <fieldset className="jp-ModelSave-example">
        <legend>{trans.__('Example input')}</legend>
        <label>
          <input
            type="radio"
            name={id('example')}
            checked={state.exampleMode === 'last'}
            disabled={!model.last_input}
            onChange={() => update({ exampleMode: 'last' })}
          />
          {model.last_input
            ? torch
              ? trans.__('Last call %1', formatShapes(model.last_input))
              : trans.__(
                  'Declared input %1 (random values)',
                  formatShapes(model.last_input)
                )
            : torch
              ? trans.__('Last call (none recorded yet)')
              : trans.__('Declared input (none: give an expression)')}
        </label>
        <label>
          <input
            type="radio"
            name={id('example')}
            checked={state.exampleMode === 'expression'}
            onChange={() => update({ exampleMode: 'expression' })}
          />
          {trans.__('Expression')}
        </label>
        {state.exampleMode === 'expression' && (
          <input
            type="text"
            className="jp-mod-styled jp-ModelSave-code"
            aria-label={trans.__('Example input expression')}
            placeholder={
              generation
                ? trans.__(
                    'token ids, e.g. tokenizer(text).input_ids; empty: random'
                  )
                : torch
                  ? trans.__('e.g. torch.randn(1, 3, 224, 224)')
                  : trans.__("e.g. np.zeros((1, 224, 224, 3), 'float32')")
            }
            value={state.expression}
            aria-invalid={!!errors.expression}
            onChange={e => update({ expression: e.target.value })}
          />
        )}
        {errors.expression ? (
          <small className="jp-ModelSave-error">{errors.expression}</small>
        ) : (
          state.exampleMode === 'expression' &&
          state.guess !== '' &&
          state.expression.trim() === state.guess && (
            <small className="jp-ModelSave-hint">
              {trans.__(
                'Guessed from the first layer; edit it, or run the model once in the notebook.'
              )}
            </small>
          )
        )}
      </fieldset>

      <div className="jp-ModelSave-row">
        {(
          [
            ['atol', trans.__('atol')],
            ['rtol', trans.__('rtol')]
          ] as const
        ).map(([key, label], i) => (
          <Field key={key} id={id(key)} label={label} error={errors[key]}>
            <input
              id={id(key)}
              type="text"
              inputMode="decimal"
              className="jp-mod-styled"
              placeholder={String(tolerances[i])}
              value={state[key]}
              aria-invalid={!!errors[key]}
              onChange={e => update({ [key]: e.target.value })}
            />
          </Field>
        ))}
      </div>
      <small className="jp-ModelSave-hint">
        {trans.__('Tolerances of the parity check; empty: by dtype.')}
      </small>

      <Field
        id={id('name')}
        label={trans.__('Artifact name')}
        hint={trans.__('Files are named <name>_v<version>_<sha256>.')}
        error={errors.name}
      >
        <input
          id={id('name')}
          type="text"
          className="jp-mod-styled"
          value={state.name}
          aria-invalid={!!errors.name}
          onChange={e => update({ name: e.target.value })}
        />
      </Field>

      <button
        type="submit"
        className="jp-Button jp-mod-styled jp-mod-accept"
        disabled={disabled || !valid}
      >
        {trans.__('Stage')}
      </button>
    </form>
  );
}

interface IFieldProps {
  id: string;
  label: string;
  hint?: string;
  error?: string;
  children: React.ReactNode;
}

/** A labelled form control with its hint or its error. */
function Field({ id, label, hint, error, children }: IFieldProps): JSX.Element {
  return (
    <div className="jp-ModelSave-field">
      <label htmlFor={id}>{label}</label>
      {children}
      {error ? (
        <small className="jp-ModelSave-error" role="alert">
          {error}
        </small>
      ) : (
        hint && <small className="jp-ModelSave-hint">{hint}</small>
      )}
    </div>
  );
}

function range(low: number, high: number): number[] {
  return Array.from({ length: high - low + 1 }, (_, i) => high - i);
}
