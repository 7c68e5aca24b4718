"""Parity of a sharded export: every rank reads its own slices back and compares them bitwise.

Each rank opens the written files with the safetensors library (which checks their headers),
reads, tensor by tensor, exactly the block its shard covers (``get_slice``) and compares it with
its local shard: same dtype, same shape, ``torch.equal``. Tensors every rank holds whole (plain
buffers) are compared on every rank, so a rank whose copy differs from the one written is found.
Extra memory: one slice at a time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from ..parity import OutputDiff, ParityReport, ProbeResult
from ._layout import Layout
from ._state import local_chunk

PROBE = "round trip: each rank's slices"


def slice_problems(
    folder: Path, layout: Layout, tensors: dict[str, torch.Tensor]
) -> list[tuple[str, str]]:
    """(name, what differs) for every tensor whose slice in the files differs from this rank's."""
    from safetensors import safe_open

    problems = []
    with ExitStack() as stack:
        opened: dict[str, Any] = {}
        for name, tensor in tensors.items():
            place = layout.places[name]
            if place.file not in opened:
                opened[place.file] = stack.enter_context(
                    safe_open(str(folder / place.file), framework="pt")
                )
            local, offsets = local_chunk(tensor)
            if not local.numel():
                continue
            note = _compare(opened[place.file], name, local, offsets)
            if note is not None:
                problems.append((name, note))
    return problems


def _compare(handle: Any, name: str, local: torch.Tensor, offsets: tuple[int, ...]) -> str | None:
    if local.dim() == 0:
        read = handle.get_tensor(name)
    else:
        read = handle.get_slice(name)[tuple(slice(o, o + s) for o, s in zip(offsets, local.shape))]
    if read.dtype != local.dtype:
        return f"dtype {local.dtype} became {read.dtype}"
    if read.shape != local.shape:
        return f"slice {list(local.shape)} read back as {list(read.shape)}"
    if not torch.equal(read, local.cpu()):
        return "values differ"
    return None


def parity_report(layout: Layout, problems_by_rank: list[list[tuple[str, str]]],
                  probe: str = PROBE) -> ParityReport:  # fmt: skip
    """One ``weights`` report over all ranks: a tensor passes when every rank's slice matched."""
    notes: dict[str, list[str]] = defaultdict(list)
    for rank, problems in enumerate(problems_by_rank):
        for name, note in problems:
            notes[name].append(f"rank {rank}: {note}")
    diffs = [
        _diff(name, list(place.shape), notes.get(name)) for name, place in layout.places.items()
    ]
    passed = not notes
    diagnosis = [f"{name}: not bitwise equal ({'; '.join(n)})." for name, n in notes.items()]
    ranks = len(problems_by_rank)
    return ParityReport(passed, 0.0, 0.0, [ProbeResult(probe, passed, diffs)],
                        f"{ranks} rank{'s' if ranks != 1 else ''}", False, diagnosis,
                        kind="weights")  # fmt: skip


def _diff(name: str, shape: list[int], notes: list[str] | None) -> OutputDiff:
    if not notes:
        return OutputDiff(name, shape, 0.0, 0.0, 0.0, 1.0, 0.0)
    return OutputDiff(name, shape, math.inf, math.inf, 1.0, 0.0, math.inf,
                      shape_mismatch="; ".join(notes), passed=False)  # fmt: skip
