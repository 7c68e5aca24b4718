import { KernelAPI } from './tokens';

/** The framework of a model as the model list shows it. */
export function frameworkLabel(framework: string | undefined): string {
  switch (framework) {
    case 'keras':
      return 'Keras';
    case 'tensorflow':
      return 'TensorFlow';
    default:
      return 'PyTorch';
  }
}

/** PyTorch models record their last call and take the torch exporters' options. */
export function isTorch(model: KernelAPI.IModelInfo): boolean {
  return (model.framework ?? 'torch') === 'torch';
}

/** The formats that apply to a model (older kernels send none: every format). */
export function modelFormats(
  model: KernelAPI.IModelInfo,
  all: string[]
): string[] {
  return model.formats?.length ? model.formats : all;
}

/** Whether the model takes `generation=True` (ONNX with past key values) for this format. */
export function offersGeneration(
  model: KernelAPI.IModelInfo,
  format: string
): boolean {
  return format === 'onnx' && model.can_generate === true;
}

/** Formats whose artifacts take dynamic axes in the form. */
export function takesDynamicAxes(
  model: KernelAPI.IModelInfo,
  format: string
): boolean {
  return format === 'onnx' || (!isTorch(model) && format === 'savedmodel');
}

/**
 * PyTorch formats saved without running the model (`needs_inputs = False` in
 * `core/formats/base.py`): a guessed example input is not sent for them.
 */
export const WEIGHT_FORMATS = ['safetensors', 'state_dict', 'checkpoint'];
