"""Did tracing bake tensor values into the artifact, or only shapes?

TorchScript's tracer warns "Converting a tensor to a Python boolean" both for a Python ``if`` on
tensor values (the artifact then keeps one side of it) and for a shape check in the user's code
(``if x.shape[1] != 8: raise``), which is harmless with static shapes. torch.export tells the
two apart: it stops at a data-dependent branch (``GuardOnDataDependentSymNode``) and represents
values read into Python (``.item()``, ``int(t)``) as unbacked symbols, while shape checks pass.
So when tracing warned, the model is traced once more with torch.export (no ONNX conversion);
only when that finds no value read at all is the warning put down to shape checks.
"""

from __future__ import annotations

from typing import Any

from .._capture import DATA_DEPENDENT, captured_output
from .base import ExportJob, dynamic_shapes

_SHAPES_ONLY = (
    "torch.export found no Python branch or number that depends on tensor values, so the "
    "TorchScript warning above is about shape checks: parity is not failed for it ({})."
)


def confirmed(job: ExportJob, conversions: list[str]) -> tuple[list[str], list[str]]:
    """(the conversions that fail parity, notes for the warnings) for what an exporter reported.

    A torch.export data-dependent guard is confirmed as it is; tracer warnings are confirmed
    unless torch.export traces ``forward`` without reading any tensor value into Python.
    """
    if not conversions or any("torch.export" in c for c in conversions):
        return conversions, []
    if _reads_values(job) is False:
        return [], [_SHAPES_ONLY.format("; ".join(conversions))]
    return conversions, []


def _reads_values(job: ExportJob) -> bool | None:
    """Whether ``forward`` reads tensor values into Python, by torch.export (None: cannot tell)."""
    import torch

    # with the dynamic axes first; when torch.export cannot keep them (a range it would narrow,
    # an axis the model fixes), static shapes still tell a value read from a shape check
    attempts = [dynamic_shapes(job)]
    if attempts[0] is not None:
        attempts.append(None)
    for shapes in attempts:
        try:
            with captured_output():
                program = torch.export.export(
                    job.model,
                    job.example.args,
                    kwargs=job.example.kwargs or None,
                    dynamic_shapes=shapes,
                    strict=False,
                )
        except Exception as err:  # torch.export raises many unrelated types
            if _is_data_dependent(err):
                return True
            continue
        return _has_unbacked_values(program)
    return None


def _is_data_dependent(err: BaseException | None) -> bool:
    while err is not None:
        if any(marker in f"{type(err).__name__}: {err}" for marker in DATA_DEPENDENT):
            return True
        err = err.__cause__
    return False


def _has_unbacked_values(program: Any) -> bool:
    """Tensor values read as numbers (``.item()``) become unbacked symbols ``u0``, ``u1``, ..."""
    import torch

    scalar_reads = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default}
    if any(node.target in scalar_reads for node in program.graph.nodes):
        return True
    return any(str(symbol).startswith("u") for symbol in program.range_constraints)
