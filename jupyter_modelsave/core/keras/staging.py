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
from .job import (
    KerasJob,
    Layout,
    declared_none_dims,
    flatten_outputs,
    normalize_example,
    output_dtypes,
)
from .onnx import RESERVED, check_opset
from .parity import device_of, tf32_off


class KerasStagedExport(StagedExport):
    """A staged Keras/TF export; its manifest adds ``framework`` and the Keras/TF versions."""

    framework = "keras"
    _job: KerasJob | None = None

    def verify(self, *, atol: float | None = None, rtol: float | None = None) -> Any:
        """As for PyTorch; tolerances given here apply to every output (not by its dtype)."""
        if (atol is not None or rtol is not None) and self._job is not None:
            self._job.output_tolerances = {}
        return super().verify(atol=atol, rtol=rtol)

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
    atol = None if atol is None else check_tolerance("atol", atol)
    rtol = None if rtol is None else check_tolerance("rtol", rtol)
    in_names = check_names("input_names", input_names, len(example.names)) or example.names
    example.names = in_names

    fmt_options = fmt.check_options(format_options)

    def build(workdir: Path) -> KerasStagedExport:
        job = KerasJob(model, framework, example, layout, in_names, [], {}, opset, meta, workdir,
                       format_options=fmt_options)  # fmt: skip
        live_names, live, dtypes = _live_outputs(job) if runs else ([], [], [])
        job.output_names = check_names("output_names", output_names, len(live_names)) or live_names
        axes = dynamic_axes
        notes = []
        if synthesised:
            axes, kept = with_declared_dynamic_axes(model, example, dynamic_axes)
            notes.append("example inputs: random normal arrays of the model's declared input "
                         f"shapes (None -> 2){kept}")  # fmt: skip
        job.dynamic_axes = check_dynamic_axes(axes, example, job.output_names)
        tolerances = by_output_dtype(job, dtypes, atol, rtol, _float_dtype(model), notes)
        progress("export", 0.1)
        exported = fmt.export(job)
        report = None
        if parity:
            progress("parity", 0.6)
            report = fmt.verify(exported, job, *tolerances, progress)
        warnings = [*notes, *exported.warnings]
        specs = [TensorSpec(n, tuple(a.shape), d, device_of(model))
                 for n, a, d in zip(job.output_names, live, dtypes)]  # fmt: skip
        staged = KerasStagedExport(fmt, exported, job, report, name, warnings, specs, tolerances)
        staged.framework = framework
        staged._job = job
        return staged

    return in_work_folder(build, progress)


def _live_outputs(job: KerasJob) -> tuple[list[str], list[Any], list[str]]:
    """Names, values (numpy) and dtypes (as computed: bfloat16 stays) of the example's outputs."""
    from .job import EXAMPLE_HELP

    try:
        with tf32_off():
            output = job.call(job.example)
            return (*flatten_outputs(output), output_dtypes(output))
    except InvalidOptionError:
        raise
    except Exception as err:
        shapes = [tuple(t.shape) for t in job.example.tensors]
        raise InvalidOptionError(
            f"The model failed on the example inputs {shapes}: {type(err).__name__}: {err}. "
            f"{EXAMPLE_HELP}"
        ) from err


def by_output_dtype(job: KerasJob, dtypes: list[str], atol: float | None, rtol: float | None,
                    model_dtype: str, notes: list[str]) -> tuple[float, float]:  # fmt: skip
    """The report's (atol, rtol), and in ``job.output_tolerances`` those of outputs judged by
    their own dtype's defaults (a float16 or bfloat16 output of a mixed-precision model).

    Tolerances you give apply to every output; a default one comes from each output's dtype.
    The report shows the loosest used; ``notes`` names the outputs judged otherwise.
    """
    per_output = {
        name: (
            default_tolerances(dtype)[0] if atol is None else atol,
            default_tolerances(dtype)[1] if rtol is None else rtol,
        )
        for name, dtype in zip(job.output_names, dtypes)
    }
    if not per_output:  # no outputs ran (a weight format): the weights' dtype
        base = default_tolerances(model_dtype)
        return (base[0] if atol is None else atol, base[1] if rtol is None else rtol)
    loosest = max(per_output.values())
    job.output_tolerances = {n: t for n, t in per_output.items() if t != loosest}
    if job.output_tolerances or len(set(dtypes)) > 1:
        notes.append("parity tolerances by output dtype: " + ", ".join(
            f"{n} ({d}) atol={per_output[n][0]:g} rtol={per_output[n][1]:g}"
            for n, d in zip(job.output_names, dtypes)))  # fmt: skip
    return loosest


def with_declared_dynamic_axes(
    model: Any, example: ExampleInputs, dynamic_axes: Any
) -> tuple[Any, str]:
    """Without ``dynamic_axes``, the dims the model declares as None (the synthesised example
    holds 2 there) stay dynamic in the artifact; returns the axes and a note naming them.

    Axis names: ``batch`` for dim 0, else ``<input>_dim<d>``. Axes you give are kept as given.
    """
    declared = declared_none_dims(model)
    if dynamic_axes is not None or len(declared) != len(example.names):
        return dynamic_axes, ""
    axes = {
        name: {d: "batch" if d == 0 else f"{name}_dim{d}" for d in dims}
        for name, dims in zip(example.names, declared)
        if dims
    }
    kept = ", ".join(f"{n}:{d}={a}" for n, dims in axes.items() for d, a in dims.items())
    return axes or None, f"; the None dims stay dynamic ({kept})" if kept else ""


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
