import { KernelAPI } from './protocol';

/**
 * What the kernel says of a model's framework and of each of its formats (the options reply:
 * `protocol.py::OptionsReply`). The sidebar decides nothing by a format's or a framework's name:
 * it shows what these capabilities say.
 */
export function frameworkOf(
  options: KernelAPI.IOptionsReply | null,
  model: KernelAPI.IModelInfo
): KernelAPI.IFrameworkInfo {
  return (
    options?.frameworks[model.framework] ?? {
      label: model.framework,
      example_hint: '',
      records_calls: true,
      formats: {}
    }
  );
}

/** A format's capabilities; a format the kernel did not describe takes no options. */
export function formatOf(
  framework: KernelAPI.IFrameworkInfo,
  format: string
): KernelAPI.IFormatInfo {
  return (
    framework.formats[format] ?? {
      extension: '',
      description: '',
      kind: 'graph',
      needs_inputs: true,
      dynamic_axes: false,
      exporters: [],
      opsets: {},
      folder: false,
      graph_view: false
    }
  );
}

/** The [lowest, highest] opset a format takes with an exporter, or null when it takes none. */
export function opsetRange(
  format: KernelAPI.IFormatInfo,
  exporter: string
): number[] | null {
  return format.opsets[exporter] ?? Object.values(format.opsets)[0] ?? null;
}
