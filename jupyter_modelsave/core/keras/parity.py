"""Parity for Keras/TF artifacts, with the PyTorch flow's probes, comparison and report.

``outputs_parity``: the live model and the artifact on every probe of ``inputs.make_probes``,
compared by ``parity.compare_output`` (TF32 off in TensorFlow meanwhile). ``weights_parity``:
every weight back bitwise equal, same dtype and shape.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..inputs import ExampleInputs
from ..parity import OutputDiff, ParityReport, ProbeResult, compare_output, diagnose
from ..verify import Progress, no_progress, probes_for
from .job import KerasJob, flatten_outputs

ArtifactRunner = Callable[[ExampleInputs], dict[str, np.ndarray]]


def outputs_parity(
    run_artifact: ArtifactRunner, job: KerasJob, atol: float, rtol: float,
    progress: Progress = no_progress,
) -> ParityReport:  # fmt: skip
    """Run the live model and the artifact on the same probes as for PyTorch; compare."""
    probes = probes_for(job)
    results = []
    for i, (probe_name, probe) in enumerate(probes.items()):
        progress(f"parity: {probe_name}", 0.6 + 0.4 * i / len(probes))
        with tf32_off():
            _, live = flatten_outputs(job.call(probe))
        got = run_artifact(probe)
        outputs = [
            compare_output(n, t, got[n], *job.output_tolerances.get(n, (atol, rtol)))
            if n in got else missing(n, t.shape)
            for n, t in zip(job.output_names, live)
        ]  # fmt: skip
        results.append(ProbeResult(probe_name, all(o.passed for o in outputs), outputs))
    return ParityReport(
        passed=all(r.passed for r in results), atol=atol, rtol=rtol, probes=results,
        reference_device=device_of(job.model), tf32=False,
        diagnosis=diagnose(results, atol, rtol),
    )  # fmt: skip


def weights_parity(live: list[tuple[str, np.ndarray]], reloaded: list[np.ndarray],
                   device: str = "cpu") -> ParityReport:  # fmt: skip
    """Each live weight (in order) must come back bitwise equal, with the same dtype and shape."""
    diffs = []
    for (name, tensor), got in zip(live, reloaded):
        same = tensor.dtype == got.dtype and tensor.shape == got.shape
        equal = same and tensor.tobytes() == got.tobytes()
        note = None
        if tensor.shape != got.shape:
            note = f"live {list(tensor.shape)} vs artifact {list(got.shape)}"
        elif tensor.dtype != got.dtype:
            note = f"dtype {tensor.dtype} became {got.dtype}"
        bad = 0.0 if equal else math.inf
        diffs.append(OutputDiff(name, list(tensor.shape), bad, bad, 0.0 if equal else 1.0,
                                1.0 if equal else 0.0, 0.0, shape_mismatch=note, passed=equal))  # fmt: skip
    diffs += [missing(name, t.shape) for name, t in live[len(reloaded) :]]
    notes = [f"{d.name}: not bitwise equal ({d.shape_mismatch or 'values differ'})."
             for d in diffs if not d.passed]  # fmt: skip
    if len(reloaded) > len(live):
        notes.append(f"The artifact holds {len(reloaded) - len(live)} weights the model does not.")
    passed = not notes
    return ParityReport(passed, 0.0, 0.0, [ProbeResult("round trip", passed, diffs)], device,
                        False, notes, kind="weights")  # fmt: skip


def live_weights(model: Any) -> list[tuple[str, np.ndarray]]:
    """(path, value) of every weight of a Keras model or ``tf.Module``, in the model's order."""
    from .job import to_numpy

    variables = model.weights if hasattr(model, "weights") else model.variables
    return [(_variable_name(v), np.array(to_numpy(v), copy=True)) for v in variables]


def _variable_name(variable: Any) -> str:
    return str(getattr(variable, "path", None) or variable.name)


def missing(name: str, shape: Any) -> OutputDiff:
    inf = math.inf
    return OutputDiff(name, list(shape), inf, inf, 1.0, 0.0, inf,
                      shape_mismatch="missing from the artifact", passed=False)  # fmt: skip


def device_of(model: Any) -> str:
    """Where a Keras/TF model's first weight lives: ``cpu``, ``gpu:0``, ... (``cpu`` if none)."""
    variables = getattr(model, "weights", None) or getattr(model, "variables", None) or []
    for variable in variables:
        value = getattr(variable, "value", variable)
        return device_name(str(getattr(value, "device", "") or "cpu"))
    return "cpu"


def device_name(device: str) -> str:
    """``/job:localhost/.../device:GPU:1`` -> ``gpu:1``; torch's ``cuda:0`` stays."""
    tail = device.rsplit("device:", 1)[-1]
    kind, _, index = tail.partition(":")
    if kind.upper() in ("CPU", "GPU") and "device:" in device:
        return "cpu" if kind.upper() == "CPU" else f"gpu:{index or 0}"
    return device or "cpu"


@contextlib.contextmanager
def tf32_off() -> Iterator[None]:
    """TensorFloat-32 off in TensorFlow (on by default on Ampere GPUs) while the live model runs."""
    tf = sys.modules.get("tensorflow")
    config = getattr(getattr(tf, "config", None), "experimental", None)
    if config is None or not hasattr(config, "tensor_float_32_execution_enabled"):
        yield
        return
    before = config.tensor_float_32_execution_enabled()
    config.enable_tensor_float_32_execution(False)
    try:
        yield
    finally:
        config.enable_tensor_float_32_execution(before)
