"""Peak resident memory growth of one call, on Linux: VmHWM after resetting it to the current RSS
through ``/proc/self/clear_refs`` (as ``tests/reliability/test_untrusted.py`` measures).

Freed heap memory that glibc keeps resident would let a later allocation grow nothing, so the heap
is trimmed (``malloc_trim``) before each measurement, and after it for the tests that follow.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

CLEAR_REFS = Path("/proc/self/clear_refs")


def can_measure() -> bool:
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_growth(call: Callable[[], Any]) -> tuple[BaseException | None, int]:
    """(the exception ``call`` raised or None, its peak RSS growth in bytes)."""
    _trim()
    CLEAR_REFS.write_text("5")  # VmHWM := VmRSS
    start = _status_kb("VmRSS")
    error: BaseException | None = None
    try:
        result = call()
        del result
    except Exception as err:  # the caller judges the error
        error = err
    growth = max(_status_kb("VmHWM") - start, 0) * 1024
    if error is not None:
        error.__traceback__ = None  # frames would keep what the call allocated alive
    _trim()
    return error, growth


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):  # not glibc
        pass


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")
