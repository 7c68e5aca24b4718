"""``stage`` for Keras models and ``tf.Module``s: ``core.staging.stage`` hands them over here.

Same options, same ``StagedExport`` (write, verify, discard, report) and the same manifest, which
also records the framework and the Keras/TensorFlow versions. PyTorch-only options (``device``,
``exporter``, ``external_data``) are refused with a message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidOptionError
from ..formats import get_format
from ..inputs import ExampleInputs, TensorSpec
from ..options import (
    check_artifact_name,
    check_dynamic_axes,
    check_metadata,
    check_names,
    check_tolerance,
    default_tolerances,
)
from ..staging import StagedExport, check_progress, in_work_folder
from ..verify import Progress
from . import _tf
from .base import versions
from .job import KerasJob, Layout, flatten_outputs, normalize_example
from .onnx import RESERVED, check_opset
from .parity import device_of, tf32_off


class KerasStagedExport(StagedExport):
    """A staged Keras/TF export; its manifest adds ``framework`` and the Keras/TF versions."""

    framework = "keras"

    def manifest(self, name: str, version: str) -> dict[str, Any]:
        data = super().manifest(name, version)
        data["framework"] = self.framework
        data["versions"] = versions()
        return data


def stage_keras(model: Any, example_inputs: Any = None, *, framework: str, format: str = "onnx",
                opset: int | None = None, dynamic_axes: dict | None = None,
                input_names: list[str] | None = None, output_names: list[str] | None = None,
                parity: bool = True, atol: float | None = None, rtol: float | None = None,
                metadata: dict[str, Any] | None = None, device: Any = None,
                exporter: str = "auto", name: str | None = None,
                external_data: bool | None = None, progress: Progress | None = None,
                **format_options: Any) -> KerasStagedExport:  # fmt: skip
    """``jms.stage`` for a Keras model or ``tf.Module`` (see ``core.staging.stage``)."""
    progress = check_progress(progress)
    progress("prepare", 0.0)
    fmt = get_format(format, framework)
    if fmt.name in _tf.TF_ONLY_FORMATS:
        _tf.check_tf_backend(fmt.name)
    _refuse_torch_options(device=device, exporter=exporter, external_data=external_data)
    opset = check_opset(opset)
    meta = check_metadata(metadata)
    clash = [k for k in meta if k in RESERVED]
    if clash:
        raise InvalidOptionError(f"metadata keys {clash} are reserved; rename them.")
    name = check_artifact_name(name if name is not None else type(model).__name__.lower())
    runs = fmt.needs_inputs or example_inputs is not None
    example, layout, synthesised = (
        normalize_example(model, framework, example_inputs) if runs
        else (ExampleInputs(()), Layout("single"), False)
    )  # fmt: skip
    if not runs:
        _check_built(model)
    default_atol, default_rtol = default_tolerances(_float_dtype(model))
    atol = default_atol if atol is None else check_tolerance("atol", atol)
    rtol = default_rtol if rtol is None else check_tolerance("rtol", rtol)
    in_names = check_names("input_names", input_names, len(example.names)) or example.names
    example.names = in_names

    fmt_options = fmt.check_options(format_options)

    def build(workdir: Path) -> KerasStagedExport:
        job = KerasJob(model, framework, example, layout, in_names, [], {}, opset, meta, workdir,
                       format_options=fmt_options)  # fmt: skip
        live_names, live = _live_outputs(job) if runs else ([], [])
        job.output_names = check_names("output_names", output_names, len(live_names)) or live_names
        job.dynamic_axes = check_dynamic_axes(dynamic_axes, example, job.output_names)
        progress("export", 0.1)
        exported = fmt.export(job)
        report = None
        if parity:
            progress("parity", 0.6)
            report = fmt.verify(exported, job, atol, rtol, progress)
        warnings = list(exported.warnings)
        if synthesised:
            warnings.insert(0, "example inputs: random normal arrays of the model's declared "
                               "input shapes (None -> 2)")  # fmt: skip
        specs = [TensorSpec(n, tuple(a.shape), str(a.dtype), device_of(model))
                 for n, a in zip(job.output_names, live)]  # fmt: skip
        staged = KerasStagedExport(fmt, exported, job, report, name, warnings, specs, (atol, rtol))
        staged.framework = framework
        return staged

    return in_work_folder(build, progress)


def _live_outputs(job: KerasJob) -> tuple[list[str], list[Any]]:
    from .job import EXAMPLE_HELP

    try:
        with tf32_off():
            return flatten_outputs(job.call(job.example))
    except InvalidOptionError:
        raise
    except Exception as err:
        shapes = [tuple(t.shape) for t in job.example.tensors]
        raise InvalidOptionError(
            f"The model failed on the example inputs {shapes}: {type(err).__name__}: {err}. "
            f"{EXAMPLE_HELP}"
        ) from err


def _refuse_torch_options(**given: Any) -> None:
    defaults = {"device": None, "exporter": "auto", "external_data": None}
    wrong = [k for k, v in given.items() if v != defaults[k]]
    if wrong:
        raise InvalidOptionError(
            f"{', '.join(wrong)} apply to PyTorch models only; leave them out for a Keras or "
            "TensorFlow model (it is exported where its variables live)."
        )


def _check_built(model: Any) -> None:
    if not getattr(model, "built", True):
        raise InvalidOptionError(
            f"{type(model).__name__} is not built and has no weights yet: call it once on an example "
            "(model(x)) or build it, then save it."
        )


def _float_dtype(model: Any) -> str:
    variables = getattr(model, "weights", None) or getattr(model, "variables", None) or []
    for variable in variables:
        dtype = str(getattr(variable.dtype, "name", variable.dtype))
        if dtype.startswith(("float", "bfloat")):
            return dtype
    return "float32"
