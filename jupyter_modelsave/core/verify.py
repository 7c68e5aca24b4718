"""Verification of a staged artifact against the live model.

Two kinds: ``outputs_parity`` runs the live model and the artifact on the same probes and
compares every output (graph formats: ONNX, TorchScript, torch.export); ``weights_parity``
checks that reloaded tensors are bitwise equal, with the same dtype (weight formats).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._capture import first_line
from .errors import ExportError, InvalidOptionError, ModelSaveError
from .hf import outputs_as_dict
from .inputs import DERIVED_PROBES, EXAMPLE_INPUTS_HELP, ExampleInputs, make_probes
from .model_state import preserved, reference_mode
from .options import shared_dimensions
from .parity import OutputDiff, ParityReport, ProbeResult, compare_output, diagnose

Progress = Callable[[str, float], None]
ArtifactRunner = Callable[[ExampleInputs], dict[str, np.ndarray]]


def no_progress(step: str, fraction: float) -> None:
    """The default progress callback: silent."""


def outputs_parity(
    run_artifact: ArtifactRunner,
    job: Any,
    atol: float,
    rtol: float,
    progress: Progress = no_progress,
    value_conversions: list[str] | None = None,
) -> ParityReport:
    """Run the live model (eval, no_grad, TF32 off) and the artifact on every probe; compare.

    ``value_conversions``: where the exporter turned tensor values into Python constants. The
    artifact then has one side of a data-dependent branch baked in, and the report fails
    whatever the probes say (``write`` needs ``allow_mismatch=True``).
    """
    probes = probes_for(job)
    conversions = list(value_conversions or [])
    results = []
    with preserved(job.model):  # once for all probes: saving and restoring costs per module
        for i, (probe_name, probe) in enumerate(probes.items()):
            progress(f"parity: {probe_name}", 0.6 + 0.4 * i / len(probes))
            live = _live_outputs(job, probe_name, probe)
            got = _run_on_probe(run_artifact, probe_name, probe)
            results.append(_compare_probe(probe_name, job.output_names, live, got, atol, rtol))
            del live, got
    return ParityReport(
        passed=all(r.passed for r in results) and not conversions,
        atol=atol,
        rtol=rtol,
        probes=results,
        reference_device=device_of(job.model),
        tf32=False,
        diagnosis=_conversion_notes(conversions) + diagnose(results, atol, rtol),
        value_conversions=conversions,
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
    try:
        return make()
    except ModelSaveError:
        raise
    except Exception as err:  # ORT, torch.jit.load, torch.export.load: many unrelated types
        raise ExportError(
            f"The staged {format_name} artifact could not be opened for the parity check: "
            f"{type(err).__name__}: {first_line(err)}. The exporter wrote a file its own runtime "
            "refuses; try another exporter or opset, or report the model to the exporter."
        ) from err


def _run_on_probe(run: ArtifactRunner, name: str, probe: ExampleInputs) -> dict[str, np.ndarray]:
    """The artifact's outputs on one probe; its failure is an ``ExportError`` naming the probe."""
    try:
        return run(probe)
    except ModelSaveError:
        raise
    except Exception as err:  # the artifact's runtime: ORT, TorchScript, torch.export
        raise ExportError(
            f"The staged artifact failed on the parity probe {name!r} "
            f"({_shapes_text(probe)}), where the live model runs: {type(err).__name__}: "
            f"{first_line(err)}. The exported graph does not accept every input the model does; "
            "if the probe resizes a dynamic axis, the exporter fixed that axis."
        ) from err


def _shapes_text(inputs: ExampleInputs) -> str:
    return ", ".join(f"{n} {tuple(t.shape)}" for n, t in zip(inputs.names, inputs.tensors))


def _probe_context(name: str, job: Any) -> str:
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


def _live_outputs(job: Any, probe_name: str, probe: ExampleInputs) -> list[torch.Tensor]:
    """The live model's outputs on a probe; the example's, when ``stage`` already has them."""
    known = getattr(job, "example_outputs", None)
    if probe_name == "example" and known is not None:
        return list(known)
    with reference_mode():  # the reference runs on the model's device
        return flatten_outputs(call_model(job.model, probe, _probe_context(probe_name, job)))[1]


def _compare_probe(name: str, names: list[str], live: list[torch.Tensor],
                   got: dict[str, np.ndarray], atol: float, rtol: float) -> ProbeResult:  # fmt: skip
    """Compare output by output; each live output reaches the host only while it is compared."""
    outputs = []
    for index, out_name in enumerate(names[: len(live)]):
        tensor = live[index]
        if out_name in got:
            outputs.append(
                compare_output(out_name, to_numpy(tensor), got.pop(out_name), atol, rtol)
            )
        else:
            outputs.append(_missing(out_name, tensor))
        live[index] = None  # type: ignore[call-overload]  # free it before the next one
    return ProbeResult(name, all(o.passed for o in outputs), outputs)


def module_runner(module: Any, output_names: list[str]) -> ArtifactRunner:
    """An ``ArtifactRunner`` for artifacts that load as torch callables (TorchScript, .pt2)."""

    def run(probe: ExampleInputs) -> dict[str, np.ndarray]:
        with torch.no_grad():
            _, tensors = flatten_outputs(module(*probe.args, **probe.kwargs))
        return {n: to_numpy(t) for n, t in zip(output_names, tensors)}

    return run


def weights_parity(model: torch.nn.Module, reloaded: dict[str, torch.Tensor]) -> ParityReport:
    """Every tensor of ``model.state_dict()`` must come back bitwise equal with the same dtype."""
    live = model.state_dict()
    diffs = []
    for name, tensor in live.items():
        got = reloaded.get(name)
        if got is None:
            diffs.append(_missing(name, tensor))
            continue
        same_dtype = got.dtype == tensor.dtype
        same_shape = got.shape == tensor.shape
        equal = same_dtype and same_shape and torch.equal(got.cpu(), tensor.detach().cpu())
        note = None
        if not same_shape:
            note = f"live {list(tensor.shape)} vs artifact {list(got.shape)}"
        elif not same_dtype:
            note = f"dtype {tensor.dtype} became {got.dtype}"
        diffs.append(OutputDiff(name, list(tensor.shape), 0.0 if equal else float("inf"),
                                0.0 if equal else float("inf"), 0.0 if equal else 1.0,
                                1.0 if equal else 0.0, 0.0, shape_mismatch=note, passed=equal))  # fmt: skip
    extra = sorted(set(reloaded) - set(live))
    passed = all(d.passed for d in diffs) and not extra
    notes = [f"The artifact holds tensors the model does not: {', '.join(extra)}."] if extra else []
    notes += [f"{d.name}: not bitwise equal ({d.shape_mismatch or 'values differ'})." for d in diffs
              if not d.passed]  # fmt: skip
    return ParityReport(passed, 0.0, 0.0, [ProbeResult("round trip", passed, diffs)],
                        device_of(model), False, notes, kind="weights")  # fmt: skip


def _missing(name: str, tensor: torch.Tensor) -> OutputDiff:
    inf = float("inf")
    return OutputDiff(name, list(tensor.shape), inf, inf, 1.0, 0.0, inf,
                      shape_mismatch="missing from the artifact", passed=False)  # fmt: skip


def flatten_outputs(output: Any) -> tuple[list[str], list[torch.Tensor]]:
    """Output names: ``output`` for one tensor, ``output_<i>`` for a sequence, a dict's keys
    (a transformers ``ModelOutput`` counts as a dict of its fields that are set)."""
    output = outputs_as_dict(output)
    if isinstance(output, torch.Tensor):
        return ["output"], [output]
    leaves, _ = torch.utils._pytree.tree_flatten_with_path(output)
    names, tensors = [], []
    for path, leaf in leaves:
        if not isinstance(leaf, torch.Tensor):
            continue
        keys = "_".join(
            str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path
        )
        names.append(keys if isinstance(output, dict) else f"output_{keys}")
        tensors.append(leaf)
    if not tensors:
        raise InvalidOptionError(
            f"The model returned no tensors ({type(output).__name__}); nothing to export."
        )
    return names, tensors


def to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.cpu().numpy()


def call_model(model: torch.nn.Module, inputs: ExampleInputs, probe: str = "") -> Any:
    """``model(*args, **kwargs)``; a failure is an ``InvalidOptionError`` saying on what input.

    ``probe``: empty for the user's example; else what the parity probe is and what to do.
    """
    try:
        return model(*inputs.args, **inputs.kwargs)
    except Exception as err:
        if probe:
            raise InvalidOptionError(
                f"The model's forward() failed on a parity probe ({_shapes_text(inputs)}), "
                f"not on your example: {type(err).__name__}: {first_line(err)}. {probe}"
            ) from err
        shapes = [tuple(t.shape) for t in inputs.tensors]
        raise InvalidOptionError(
            f"The model's forward() failed on the example inputs {shapes}: "
            f"{type(err).__name__}: {err}. {EXAMPLE_INPUTS_HELP}"
        ) from err


def device_of(model: torch.nn.Module) -> str:
    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    return str(tensor.device) if tensor is not None else "cpu"


def probes_for(job: Any) -> dict[str, Any]:
    """The job's parity probes; its dynamic axes become (input index, dim) places per axis name."""
    dims: dict[str, list[tuple[int, int]]] = {}
    for index, name in enumerate(job.input_names):
        for dim, axis in job.dynamic_axes.get(name, {}).items():
            dims.setdefault(axis, []).append((index, dim))
    return make_probes(job.example, dims)
