"""Measured latency of a staged graph artifact in its runtime, next to the live model eager.

Both sides run the example inputs on the kernel's device (the model's): the artifact in its
runtime (ONNX Runtime on the CUDA provider when the model is on a GPU and onnxruntime-gpu is
installed, else its CPU provider; TorchScript and ``.pt2`` programs in torch on the model's
device) and the live model in eval mode under ``no_grad``. Each call is measured from inputs in
place to outputs in host memory (numpy arrays for the artifact, tensors copied to the host for
the model, so a GPU run is synchronised), after warm-up runs. An ONNX artifact with external
data (over 2 GB) runs on its memory-mapped weights, as parity does, so that no second copy of
the weights is made; its MatMul weights are then not prepacked, and a serving session would be
somewhat faster. The measurement is bounded: at
most ``max_runs`` timed runs per side and ``max_seconds`` for both sides together (warm-ups
included), but always at least one warm-up and one timed run per side.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidOptionError, shown

if TYPE_CHECKING:
    from .formats.base import ArtifactFormat, Exported, ExportJob

DEFAULT_RUNS = 50
DEFAULT_SECONDS = 2.0
WARMUP_RUNS = 3
MAX_RUNS = 10_000
MAX_SECONDS = 600.0


@dataclass(frozen=True)
class Budget:
    max_runs: int = DEFAULT_RUNS
    max_seconds: float = DEFAULT_SECONDS


def check_latency(value: Any) -> Budget | None:
    """``True`` (the default budget), ``False`` (skip), or ``{"max_runs": n, "max_seconds": s}``."""
    if value is True:
        return Budget()
    if value is False or value is None:
        return None
    if isinstance(value, Mapping) and set(value) <= {"max_runs", "max_seconds"}:
        runs = value.get("max_runs", DEFAULT_RUNS)
        seconds = value.get("max_seconds", DEFAULT_SECONDS)
        if (type(runs) is int and 1 <= runs <= MAX_RUNS and isinstance(seconds, (int, float))
                and not isinstance(seconds, bool) and 0 < seconds <= MAX_SECONDS):  # fmt: skip
            return Budget(runs, float(seconds))
    raise InvalidOptionError(
        f"latency must be True, False or a dict like {{'max_runs': 50, 'max_seconds': 2.0}} "
        f"(1 to {MAX_RUNS:,} runs, up to {MAX_SECONDS:g} s), got {shown(value)}."
    )


def measure(
    fmt: ArtifactFormat, exported: Exported, job: ExportJob, budget: Budget
) -> dict[str, Any]:
    """``{"p50_ms", "p95_ms", "eager_p50_ms", "eager_p95_ms", "device", "runtime", "batch",
    "runs", "eager_runs"}`` for the staged artifact and the live model on ``job.example``."""
    import torch

    adapter = job.adapter
    device = adapter.device_of(job.model)
    run_artifact, runtime = _artifact_call(fmt, exported, job, device)

    def run_eager() -> None:
        for tensor in adapter.flatten(adapter.call(job.model, job.example))[1]:
            tensor.detach().cpu()

    share = budget.max_seconds / 2
    with adapter.kept(job.model), torch.no_grad():
        artifact_times = _timed(run_artifact, budget.max_runs, share)
        eager_times = _timed(run_eager, budget.max_runs, share)
    return {
        "p50_ms": _percentile(artifact_times, 50),
        "p95_ms": _percentile(artifact_times, 95),
        "eager_p50_ms": _percentile(eager_times, 50),
        "eager_p95_ms": _percentile(eager_times, 95),
        "device": device,
        "runtime": runtime,
        "batch": _batch(job),
        "runs": len(artifact_times),
        "eager_runs": len(eager_times),
    }


def _artifact_call(fmt: ArtifactFormat, exported: Exported, job: ExportJob,
                   device: str) -> tuple[Callable[[], Any], str]:  # fmt: skip
    """A no-argument call of the artifact on the example, and what runs it."""
    if fmt.name == "onnx":
        from . import _ort
        from .formats.onnx import MODEL_FILE

        large = exported.path.is_dir()  # external data: map the weights, as parity does
        path = exported.path / MODEL_FILE if large else exported.path
        # threads that sleep between runs: spinning ones would take the cores from the eager runs
        session = _ort.session(path, prefer_cuda=device.startswith("cuda"), map_weights=large,
                               spin=False)  # fmt: skip
        feeds = _ort.numpy_feeds(session, job.input_names, job.example.tensors)
        runtime = f"onnxruntime {session.get_providers()[0]}"
        if large:
            runtime += " (weights mapped, not prepacked)"
        return (lambda: session.run(None, feeds)), runtime
    runner = fmt.runner(exported, job)
    return (lambda: runner(job.example)), f"torch ({fmt.name})"


def _timed(call: Callable[[], Any], max_runs: int, seconds: float) -> list[float]:
    """Seconds of each timed run: warm-ups first, then runs until ``max_runs`` or ``seconds``."""
    start = time.perf_counter()
    for i in range(WARMUP_RUNS):
        call()
        if i == 0 and time.perf_counter() - start > seconds / 4:
            break  # a slow model: one warm-up is all the budget allows
    times: list[float] = []
    while len(times) < max_runs:
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
        times.append(t1 - t0)
        if t1 - start >= seconds:
            break
    return times


def _percentile(times: list[float], q: float) -> float:
    import numpy as np

    return round(float(np.percentile(np.array(times) * 1000.0, q)), 4)


def _batch(job: ExportJob) -> int | None:
    tensors = job.example.tensors
    return int(tensors[0].shape[0]) if tensors and tensors[0].dim() > 0 else None
