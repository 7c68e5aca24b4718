"""The adversarial suite records the peak RSS growth of every hostile load it replays and, at the
end of the run, prints the worst against the documented bound (``core/limits.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jupyter_modelsave.core.hashing import size_of
from jupyter_modelsave.core.limits import memory_bound

from ._memory import can_measure, peak_growth

MiB = 2**20
RECORDS: list[tuple[str, int, int, int]] = []  # (test id, growth, artifact bytes, bound)


@pytest.fixture
def hostile_load(request) -> Callable[..., BaseException | None]:
    """``hostile_load(call, artifact)`` runs ``call``, asserts that its peak RSS growth stays
    within ``memory_bound`` of the artifact's size (a path, or the bytes of a string's payload),
    records it, and returns the exception raised (None if it loaded)."""
    if not can_measure():
        pytest.skip("needs Linux /proc/self/clear_refs to measure peak memory")

    def run(call: Callable[[], Any], artifact: Path | int) -> BaseException | None:
        size = artifact if isinstance(artifact, int) else size_of(Path(artifact))
        error, growth = peak_growth(call)
        bound = memory_bound(size)
        RECORDS.append((request.node.nodeid.split("::", 1)[-1], growth, size, bound))
        assert growth <= bound, (
            f"an untrusted load grew the process by {growth / MiB:.0f} MiB, over the bound "
            f"{bound / MiB:.0f} MiB for {size:,} bytes ({error!r})"
        )
        return error

    return run


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RECORDS:
        return
    worst = max(RECORDS, key=lambda r: r[1] / r[3])
    largest = max(RECORDS, key=lambda r: r[1])
    write = terminalreporter.write_line
    terminalreporter.section("untrusted loads: peak RSS growth")
    write(f"{len(RECORDS)} hostile loads measured; bound = 64 MiB + 8 x the artifact's bytes")
    write(f"largest growth: {largest[1] / MiB:.1f} MiB ({largest[0]}, {largest[2]:,} bytes)")
    write(f"worst against its bound: {worst[1] / MiB:.1f} of {worst[3] / MiB:.0f} MiB "
          f"({100 * worst[1] / worst[3]:.0f}%) in {worst[0]}")  # fmt: skip
