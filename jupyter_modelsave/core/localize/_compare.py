"""Comparing module calls of the live model with the artifact's, with bounded memory.

**Side by side** (ONNX, torch.export): the artifact computes the probe once per batch of calls
and hands back those calls' values; the live model then runs the same probe with hooks that
compare each call's output (and inputs) the moment it is made, and drop both. A batch holds
calls whose outputs add up to at most ``BATCH_BYTES`` (a call larger than that gets a batch of its
own), so memory stays bounded whatever the model's size; a small model needs one batch.

**In isolation** (TorchScript): each submodule of the artifact runs on the inputs its live
counterpart got, inside the live model's own forward pass, so every module is judged on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from ..frameworks import adapter
from ..frameworks.torch import to_numpy
from ..inputs import ExampleInputs
from ..parity import OutputDiff, compare_output
from ..verify import live_outputs
from ._calls import Call, tensors_in, watched

BATCH_BYTES = 256 * 1024**2


@dataclass
class Figures:
    """One call's comparison: the worst of its output tensors."""

    shape: list[int]
    max_abs: float
    max_rel: float
    cosine: float
    mismatch_fraction: float
    passed: bool


@dataclass
class ArtifactCall:
    outputs: list[np.ndarray]
    inputs: list[np.ndarray] | None  # None: not known (no input check)


class ArtifactSide(Protocol):
    def calls(self, probe: ExampleInputs, wanted: list[Call]) -> dict[int, ArtifactCall]:
        """The artifact's values of the ``wanted`` calls on ``probe``, by call position."""


class CallsChanged(Exception):
    """The model made other module calls on the same probe (its forward is not deterministic)."""


def figures(live: list[torch.Tensor], got: list[np.ndarray], atol: float, rtol: float) -> Figures:
    """Compare a call's tensors; the figures of its worst tensor (all must pass)."""
    diffs = [compare_output("", to_numpy(a), b, atol, rtol) for a, b in zip(live, got)]
    worst = max(diffs, key=_badness)
    return Figures(list(worst.shape), worst.max_abs, worst.max_rel, min(d.cosine for d in diffs),
                   worst.mismatch_fraction, all(d.passed for d in diffs))  # fmt: skip


def _badness(d: OutputDiff) -> tuple:
    return (not d.passed, d.shape_mismatch is not None, d.mismatch_fraction, d.max_abs)


def same_shapes(live: list[torch.Tensor], got: list[np.ndarray]) -> bool:
    return len(live) == len(got) and all(tuple(a.shape) == b.shape for a, b in zip(live, got))


def batches(calls: list[Call], limit: int = BATCH_BYTES) -> list[list[Call]]:
    """``calls`` in groups whose outputs add up to at most ``limit`` bytes."""
    groups: list[list[Call]] = [[]]
    size = 0
    for call in calls:
        if groups[-1] and size + call.output_bytes > limit:
            groups.append([])
            size = 0
        groups[-1].append(call)
        size += call.output_bytes
    return [g for g in groups if g]


def side_by_side(model: torch.nn.Module, probe: ExampleInputs, calls: list[Call],
                 side: ArtifactSide, atol: float,
                 rtol: float) -> tuple[dict[int, Figures], dict[int, bool]]:  # fmt: skip
    """``({position: output figures}, {position: whether the inputs differ})`` of the calls the
    artifact side knows; raises ``CallsChanged`` when the live run makes other calls."""
    results: dict[int, Figures] = {}
    inputs_differ: dict[int, bool] = {}
    for batch in batches(calls, BATCH_BYTES):
        got = side.calls(probe, batch)
        if got:
            _live_batch(model, probe, calls, got, (atol, rtol), results, inputs_differ)
        del got
    return results, inputs_differ


def _live_batch(model: torch.nn.Module, probe: ExampleInputs, calls: list[Call],
                got: dict[int, ArtifactCall], tolerances: tuple[float, float],
                results: dict[int, Figures], inputs_differ: dict[int, bool]) -> None:  # fmt: skip
    """Run the live model once, comparing the calls in ``got`` as they happen (and dropping them)."""

    def on_start(call: Call, inputs: list[torch.Tensor], args: tuple, kwargs: dict) -> None:
        _check_same(call, calls)
        art = got.get(call.position)
        # one tensor in: nothing to pair up wrongly (the order of several is not sure)
        if art is not None and art.inputs and len(inputs) == 1 and same_shapes(inputs, art.inputs):
            inputs_differ[call.position] = not figures(inputs, art.inputs, *tolerances).passed
            art.inputs = None

    def on_end(call: Call, outputs: list[torch.Tensor], args: tuple, kwargs: dict) -> None:
        art = got.pop(call.position, None)
        if art is not None and same_shapes(outputs, art.outputs):
            results[call.position] = figures(outputs, art.outputs, *tolerances)

    with watched(model, on_start, on_end):
        model(*probe.args, **probe.kwargs)  # not live_outputs: CallsChanged goes through


def _check_same(call: Call, calls: list[Call]) -> None:
    first = calls[call.position] if call.position < len(calls) else None
    if first is None or (first.module, first.index) != (call.module, call.index):
        raise CallsChanged(
            f"the model's module calls changed between two runs on the same probe (at "
            f"{call.module or 'the model'!r}): its forward is not deterministic"
        )


def in_isolation(model: torch.nn.Module, probe: ExampleInputs,
                 counterpart: Callable[[str], Any], atol: float,
                 rtol: float) -> tuple[list[Call], dict[int, Figures]]:  # fmt: skip
    """Run ``counterpart(module name)`` (the artifact's submodule, or None) on each live call's
    inputs, in the live forward pass; ``(calls, {position: figures})``.

    The inputs are copied before the live forward runs (an in-place forward may change them).
    """
    results: dict[int, Figures] = {}
    saved: dict[int, Any] = {}

    def on_start(call: Call, inputs: list[torch.Tensor], args: tuple, kwargs: dict) -> None:
        if counterpart(call.module) is not None:
            saved[call.position] = torch.utils._pytree.tree_map(_copy, (args, kwargs))

    def on_end(call: Call, outputs: list[torch.Tensor], args: tuple, kwargs: dict) -> None:
        arguments = saved.pop(call.position, None)
        module = counterpart(call.module)
        if arguments is None or module is None:
            return
        try:
            got = tensors_in(module(*arguments[0], **arguments[1]))
        except Exception:  # the artifact's submodule does not take this call: not compared
            return
        if len(got) == len(outputs):
            results[call.position] = figures(outputs, [to_numpy(t) for t in got], atol, rtol)

    with watched(model, on_start, on_end) as calls:
        live_outputs(adapter("torch"), model, probe)
    return calls, results


def _copy(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, torch.Tensor) else value
