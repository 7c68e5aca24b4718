import { TranslationBundle } from '@jupyterlab/translation';
import { HTMLSelect } from '@jupyterlab/ui-components';
import * as React from 'react';

import { formatShapes } from '../format';
import { KernelAPI } from '../protocol';

export interface IExportFormProps {
  model: KernelAPI.IModelInfo;
  options: KernelAPI.IOptionsReply;
  disabled: boolean;
  onStage: (args: KernelAPI.IStageArgs) => void;
  trans: TranslationBundle;
}

/** One dimension of one input in the dynamic-axes editor. */
interface IAxisRow extends KernelAPI.IAxisRow {
  enabled: boolean;
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
  /** "For generation (with cache)": ONNX with past key values. */
  generation: boolean;
  /** '' : the model's own precision. */
  precision: string;
}

type Errors = Partial<Record<string, string>>;

/** The [lowest, highest] opset a format takes with an exporter, or null when it takes none. */
function opsetRange(
  format: KernelAPI.IFormatInfo,
  exporter: string
): number[] | null {
  return format.opsets[exporter] ?? Object.values(format.opsets)[0] ?? null;
}

/** What the form offers besides the format's capabilities (as `service.py::offered`): the
 * precision variants (the format's, for a model they are made of; fp32 is its own) and "for
 * generation" (a model that can generate, in a format that holds it). */
export function offered(
  model: KernelAPI.IModelInfo,
  format: KernelAPI.IFormatInfo
): { variants: string[]; generation: boolean } {
  return {
    variants: model.variants ? format.precisions.filter(p => p !== 'fp32') : [],
    generation: model.can_generate && format.generation
  };
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$/;

/**
 * The kernel's rows for the inputs the form starts from (the last recorded call, else the guess
 * from the first layer); rows of the same input and dimension keep their tick and name.
 */
function axisRows(
  rows: KernelAPI.IAxisRow[],
  old: IAxisRow[] = []
): IAxisRow[] {
  return rows.map(row => {
    const kept = old.find(r => r.input === row.input && r.dim === row.dim);
    return {
      ...row,
      enabled: kept?.enabled ?? false,
      name: kept?.name ?? row.name
    };
  });
}

/**
 * The form's first state, from the model's last recorded call; without one, the example input
 * guessed from its first layer fills the expression (editable), so Stage works without typing.
 */
function initialState(model: KernelAPI.IModelInfo): IFormState {
  return {
    format: model.formats[0] ?? '',
    exporter: 'auto',
    opset: '',
    axes: axisRows(model.axes),
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
    setState(s => {
      if (s.exampleMode === 'last') {
        return { ...s, axes: axisRows(model.axes, s.axes) };
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
        axes: axisRows(model.axes, s.axes)
      };
    });
  }, [signature]);
}

/** Every invalid field with the reason; empty when the form can be staged. */
export function validate(
  state: IFormState,
  format: KernelAPI.IFormatInfo,
  framework: KernelAPI.IFrameworkInfo,
  trans: TranslationBundle,
  generation = false
): Errors {
  const errors: Errors = {};
  const opsets = opsetRange(format, state.exporter);
  if (state.opset !== '' && opsets) {
    const [low, high] = opsets;
    const opset = Number(state.opset);
    if (!Number.isInteger(opset) || opset < low || opset > high) {
      errors.opset = trans.__('Choose an opset from %1 to %2.', low, high);
    }
  }
  state.axes.forEach(row => {
    if (format.dynamic_axes && row.enabled && !IDENTIFIER.test(row.name)) {
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
      'Give a Python expression, e.g. %1.',
      framework.example_hint
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

/**
 * The `stage` arguments of a valid form. Every choice offered is sent: the kernel leaves out what
 * the format does not take (`service.py::stage_options`), and an expression guessed from the
 * first layer for a format that needs no inputs.
 */
function stageArgs(
  model: KernelAPI.IModelInfo,
  state: IFormState,
  offers: ReturnType<typeof offered>
): KernelAPI.IStageArgs {
  const axes: { [input: string]: { [dim: string]: string } } = {};
  for (const row of state.axes.filter(r => r.enabled)) {
    axes[row.input] = { ...axes[row.input], [String(row.dim)]: row.name };
  }
  return {
    model: model.name,
    format: state.format,
    exporter: state.exporter,
    opset: state.opset ? Number(state.opset) : null,
    name: state.name,
    example: state.exampleMode === 'expression' ? state.expression : null,
    atol: state.atol.trim() ? Number(state.atol) : null,
    rtol: state.rtol.trim() ? Number(state.rtol) : null,
    dynamic_axes: Object.keys(axes).length > 0 ? axes : null,
    generation: offers.generation && state.generation,
    precision: offers.variants.includes(state.precision)
      ? state.precision
      : null
  };
}

/**
 * The export options of the picked model: the formats that apply to it, and the options the
 * chosen format takes (its capabilities: an exporter choice, opsets, dynamic axes); invalid
 * values are refused in the form, with the reason.
 */
export function ExportForm({
  model,
  options,
  disabled,
  onStage,
  trans
}: IExportFormProps): JSX.Element {
  const [state, setState] = React.useState(() => initialState(model));
  useLastCall(model, setState);
  // what the kernel says of the model's framework and of the chosen format's capabilities
  const framework = options.frameworks[model.framework];
  const format = framework.formats[state.format];
  const offers = offered(model, format);
  const generation = offers.generation && state.generation;
  const errors = validate(state, format, framework, trans, generation);
  const valid = Object.keys(errors).length === 0;
  const update = (patch: Partial<IFormState>) =>
    setState(s => ({ ...s, ...patch }));
  const setAxis = (index: number, patch: Partial<IAxisRow>) =>
    setState(s => ({
      ...s,
      axes: s.axes.map((row, i) => (i === index ? { ...row, ...patch } : row))
    }));
  const opsets = opsetRange(format, state.exporter);
  const [low, high] = opsets ?? [0, 0];
  const dtype = model.dtype.split(',')[0];
  const tolerances = options.tolerances[dtype] ??
    options.tolerances.float32 ?? [1e-4, 1e-3];
  const recorded = framework.records_calls;
  const id = (field: string) => `jp-ModelSave-${model.name}-${field}`;

  return (
    <form
      className="jp-ModelSave-form"
      aria-label={trans.__('Export options')}
      onSubmit={event => {
        event.preventDefault();
        if (valid && !disabled) {
          onStage(stageArgs(model, state, offers));
        }
      }}
    >
      <Field id={id('format')} label={trans.__('Format')}>
        <HTMLSelect
          id={id('format')}
          value={state.format}
          onChange={e => update({ format: e.target.value })}
          options={model.formats}
        />
      </Field>

      {offers.variants.length > 0 && (
        <Field
          id={id('precision')}
          label={trans.__('Precision')}
          hint={trans.__(
            'A variant, checked against the live model with tolerances by precision.'
          )}
        >
          <HTMLSelect
            id={id('precision')}
            value={
              offers.variants.includes(state.precision) ? state.precision : ''
            }
            onChange={e => update({ precision: e.target.value })}
            options={[
              { value: '', label: trans.__('model’s own (fp32)') },
              ...offers.variants.map(p => ({ value: p, label: p }))
            ]}
          />
        </Field>
      )}

      {format.exporters.length > 1 && (
        <Field
          id={id('exporter')}
          label={trans.__('Exporter')}
          hint={trans.__('auto: dynamo, falling back to TorchScript.')}
        >
          <HTMLSelect
            id={id('exporter')}
            value={state.exporter}
            onChange={e => update({ exporter: e.target.value })}
            options={format.exporters}
          />
        </Field>
      )}
      {opsets && (
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
      {offers.generation && (
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
      {format.dynamic_axes && !generation && (
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
            ? recorded
              ? trans.__('Last call %1', formatShapes(model.last_input))
              : trans.__(
                  'Declared input %1 (random values)',
                  formatShapes(model.last_input)
                )
            : recorded
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
                : trans.__('e.g. %1', framework.example_hint)
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
