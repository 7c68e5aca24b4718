"""Verification of a staged artifact against the live model, for every framework.

Two kinds: ``outputs_parity`` runs the live model and the artifact on the same probes and
compares every output (graph formats: ONNX, TorchScript, torch.export, SavedModel);
``weights_parity`` checks that reloaded weights are bitwise equal, with the same dtype and shape
(weight formats). The framework's adapter calls the model and flattens its outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ._capture import first_line
from .errors import ExportError, InvalidOptionError, raised_as, shown
from .frameworks import adapter_for
from .inputs import DERIVED_PROBES, ExampleInputs, make_probes
from .job import Progress
from .options import shared_dimensions
from .parity import OutputDiff, ParityReport, ProbeResult, compare_output, diagnose, failed_output

if TYPE_CHECKING:
    from .frameworks import Adapter
    from .job import ExportJob

ArtifactRunner = Callable[[ExampleInputs], dict[str, np.ndarray]]


def no_progress(step: str, fraction: float) -> None:
    """The default progress callback: silent."""


def check_progress(progress: Any) -> Progress:
    """``progress`` as given (a callable), or ``no_progress`` for None."""
    if progress is None:
        return no_progress
    if not callable(progress):
        raise InvalidOptionError(
            f"progress must be a function progress(step: str, fraction: float), got {shown(progress)}."
        )
    return progress


def outputs_parity(
    run_artifact: ArtifactRunner,
    job: ExportJob,
    atol: float,
    rtol: float,
    progress: Progress = no_progress,
    value_conversions: list[str] | None = None,
) -> ParityReport:
    """Run the live model (inference, TF32 off) and the artifact on every probe; compare.

    ``value_conversions``: where the exporter turned tensor values into Python constants. The
    artifact then has one side of a data-dependent branch baked in, and the report fails
    whatever the probes say (``write`` needs ``allow_mismatch=True``).
    """
    adapter = job.adapter
    probes = probes_for(job)
    conversions = list(value_conversions or [])
    results = []
    with adapter.kept(job.model):  # once for all probes: saving and restoring costs per module
        for i, (probe_name, probe) in enumerate(probes.items()):
            progress(f"parity: {probe_name}", 0.6 + 0.4 * i / len(probes))
            live = _live_on_probe(job, probe_name, probe)
            got = _run_on_probe(run_artifact, probe_name, probe)
            results.append(_compare_probe(probe_name, job, live, got, atol, rtol))
            del live, got
    return ParityReport(
        passed=all(r.passed for r in results) and not conversions,
        atol=atol,
        rtol=rtol,
        probes=results,
        reference_device=adapter.device_of(job.model),
        tf32=False,
        diagnosis=_conversion_notes(conversions) + diagnose(results, atol, rtol),
        value_conversions=conversions,
    )


def live_outputs(
    adapter: Adapter, model: Any, inputs: ExampleInputs, probe: str = ""
) -> tuple[list[str], list[Any]]:
    """Names and values of the live model's outputs on ``inputs`` (a reference run).

    A failure is an ``InvalidOptionError`` saying on what input; ``probe``: empty for the user's
    example, else what the parity probe is and what to do.
    """
    try:
        with adapter.reference():
            output = adapter.call(model, inputs)
    except Exception as err:
        call = f"The model's {adapter.call_name} failed"
        if probe:
            raise InvalidOptionError(
                f"{call} on a parity probe ({_shapes_text(inputs)}), not on your example: "
                f"{type(err).__name__}: {first_line(err)}. {probe}"
            ) from err
        shapes = [tuple(t.shape) for t in inputs.tensors]
        raise InvalidOptionError(
            f"{call} on the example inputs {shapes}: {type(err).__name__}: {err}. "
            f"{adapter.example_help}"
        ) from err
    names, values = adapter.flatten(output)
    if not values:
        raise InvalidOptionError(_no_tensors_message(adapter, output))
    return names, values


_CONTAINERS = (tuple, list, dict, set, frozenset, type(None))


def _no_tensors_message(adapter: Adapter, output: Any) -> str:
    """Nothing to export: an empty container, or a class whose tensors jms cannot reach (a
    dataclass, any other object), with the shapes to return instead."""
    kind = type(output).__name__
    if isinstance(output, _CONTAINERS):
        return f"The model returned no tensors ({kind}); nothing to export."
    return (
        f"The model returned a {kind}, in which jms finds no tensors: it reads outputs from "
        "tensors and from tuples, lists and dicts of them (and transformers ModelOutputs). "
        f"Return one of those from {adapter.call_name} (for a dataclass, a dict of its fields), "
        "or stage a small wrapper module that does."
    )


def _conversion_notes(conversions: list[str]) -> list[str]:
    if not conversions:
        return []
    return [
        f"The exporter baked tensor values into the artifact ({'; '.join(conversions)}). Where "
        "a Python `if` (or int/float) depends on tensor values, the artifact always takes the "
        "side the example took, and probes that agree prove nothing about the other side. "
        "Rewrite that code with torch.where or torch.cond; if it only checks shapes, or the "
        "value is the same for every input you will use, write with allow_mismatch=True."
    ]


def artifact_runner(make: Callable[[], ArtifactRunner], format_name: str) -> ArtifactRunner:
    """``make()``, with a failure to open the staged artifact raised as ``ExportError``."""
    before = f"The staged {format_name} artifact could not be opened for the parity check: "
    after = (
        ". The exporter wrote a file its own runtime refuses; try another exporter or opset, or "
        "report the model to the exporter."
    )
    with raised_as(ExportError, before, after):  # ORT, torch.jit.load, torch.export.load: any type
        return make()


def _run_on_probe(run: ArtifactRunner, name: str, probe: ExampleInputs) -> dict[str, np.ndarray]:
    """The artifact's outputs on one probe; its failure is an ``ExportError`` naming the probe."""
    before = (
        f"The staged artifact failed on the parity probe {name!r} ({_shapes_text(probe)}), "
        "where the live model runs: "
    )
    after = (
        ". The exported graph does not accept every input the model does; if the probe resizes "
        "a dynamic axis, the exporter fixed that axis."
    )
    with raised_as(ExportError, before, after):  # ORT, TorchScript, torch.export, TF: any type
        return run(probe)


def _shapes_text(inputs: ExampleInputs) -> str:
    return ", ".join(f"{n} {tuple(t.shape)}" for n, t in zip(inputs.names, inputs.tensors))


def _probe_context(name: str, job: ExportJob) -> str:
    """Why the live model might fail on a probe it was not given by the user, and what to do."""
    if name == "example":
        return ""
    if name in DERIVED_PROBES:
        return (
            f"jms made the probe {name!r} from the example (negated, shifted or scaled floats, "
            "integers kept in the example's range) to reach both sides of value-dependent "
            "branches. If the model only accepts inputs like the example, pass parity=False and "
            "check the artifact yourself."
        )
    shapes = [s.shape for s in job.example.specs]
    hint = shared_dimensions(shapes, job.input_names, job.dynamic_axes)
    what = "resizes a dynamic axis" if "=" in name else "draws random values"
    return f"jms's probe {name!r} {what} of the example." + (f" {hint}" if hint else "")


def _live_on_probe(job: ExportJob, probe_name: str, probe: ExampleInputs) -> list[Any]:
    """The live model's outputs on a probe; the example's, when ``stage`` already has them."""
    known = job.example_outputs
    if probe_name == "example" and known is not None:
        return list(known)
    return live_outputs(job.adapter, job.model, probe, _probe_context(probe_name, job))[1]


def _compare_probe(name: str, job: ExportJob, live: list[Any], got: dict[str, np.ndarray],
                   atol: float, rtol: float) -> ProbeResult:  # fmt: skip
    """Compare output by output; each live output reaches the host only while it is compared."""
    outputs = []
    for index, out_name in enumerate(job.output_names[: len(live)]):
        value = live[index]
        if out_name in got:
            tolerances = job.output_tolerances.get(out_name, (atol, rtol))
            live_array = job.adapter.to_numpy(value)
            outputs.append(compare_output(out_name, live_array, got.pop(out_name), *tolerances))
        else:
            outputs.append(failed_output(out_name, value.shape))
        live[index] = None  # free it before the next one
    return ProbeResult(name, all(o.passed for o in outputs), outputs)


def weights_parity(model: Any, reloaded: dict[str, Any],
                   live: dict[str, Any] | None = None) -> ParityReport:  # fmt: skip
    """Every live weight (``live``, default: the model's now) must come back bitwise equal, with
    the same dtype and shape, under its name in ``reloaded``."""
    adapter = adapter_for(model)
    live = adapter.live_weights(model) if live is None else live
    diffs = []
    for name, value in live.items():
        got = reloaded.get(name)
        if got is None:
            diffs.append(failed_output(name, value.shape))
            continue
        same_dtype = got.dtype == value.dtype
        same_shape = tuple(got.shape) == tuple(value.shape)
        equal = same_dtype and same_shape and adapter.bitwise_equal(value, got)
        note = None
        if not same_shape:
            note = f"live {list(value.shape)} vs artifact {list(got.shape)}"
        elif not same_dtype:
            note = f"dtype {value.dtype} became {got.dtype}"
        bad = 0.0 if equal else float("inf")
        diffs.append(OutputDiff(name, list(value.shape), bad, bad, 0.0 if equal else 1.0,
                                1.0 if equal else 0.0, 0.0, shape_mismatch=note, passed=equal))  # fmt: skip
    extra = sorted(set(reloaded) - set(live))
    passed = all(d.passed for d in diffs) and not extra
    notes = [f"The artifact holds tensors the model does not: {', '.join(extra)}."] if extra else []
    notes += [f"{d.name}: not bitwise equal ({d.shape_mismatch or 'values differ'})." for d in diffs
              if not d.passed]  # fmt: skip
    return ParityReport(passed, 0.0, 0.0, [ProbeResult("round trip", passed, diffs)],
                        adapter.device_of(model), False, notes, kind="weights")  # fmt: skip


def probes_for(job: ExportJob) -> dict[str, ExampleInputs]:
    """The job's parity probes; its dynamic axes become (input index, dim) places per axis name."""
    dims: dict[str, list[tuple[int, int]]] = {}
    for index, name in enumerate(job.input_names):
        for dim, axis in job.dynamic_axes.get(name, {}).items():
            dims.setdefault(axis, []).append((index, dim))
    return make_probes(job.example, dims)
