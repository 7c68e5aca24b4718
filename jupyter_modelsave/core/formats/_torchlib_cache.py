"""Reuse torch.onnx's torchlib registry across exports in one process.

torch.onnx's dynamo exporter rebuilds ``ONNXRegistry.from_torchlib()`` on every call (~1.3 s of a
~2.3 s export of a small model on a 2-core CPU). In a long-lived kernel that work is the same every
time, so while jupyter_modelsave exports it swaps in a memoised ``from_torchlib`` that hands out a
copy of the registry built once per opset. This reaches into torch internals, so it is guarded:
only torch versions in ``TESTED`` use it, anything unexpected falls back to torch's own call, and
the test suite checks that the ONNX graph is identical to a bare ``torch.onnx.export``'s.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Iterator
from typing import Any

import torch

TESTED = ("2.9", "2.10", "2.11", "2.12", "2.13")
_CACHE: dict[tuple[Any, int], Any] = {}
_LOCK = threading.Lock()


def supported() -> bool:
    return torch.__version__.startswith(TESTED) and _registry_class() is not None


def _registry_class() -> Any:
    try:
        from torch.onnx._internal.exporter._registration import ONNXRegistry
    except ImportError:
        return None
    original = ONNXRegistry.__dict__.get("from_torchlib")
    return ONNXRegistry if isinstance(original, classmethod) else None


@contextlib.contextmanager
def reused_torchlib_registry() -> Iterator[bool]:
    """Within the block, ``ONNXRegistry.from_torchlib`` returns copies of a cached registry.

    Yields whether the cache is in use (False: torch's own call runs unchanged).
    """
    registry_class = _registry_class() if supported() else None
    if registry_class is None:
        yield False
        return
    original = registry_class.__dict__["from_torchlib"]

    def from_torchlib(cls: Any, *args: Any, **kwargs: Any) -> Any:
        opset = kwargs.get("opset_version", args[0] if args else None)
        key = (cls, opset)
        with _LOCK:
            base = _CACHE.get(key)
            if base is None:
                base = _CACHE[key] = original.__func__(cls, *args, **kwargs)
        return _copied(base)

    with _LOCK:
        registry_class.from_torchlib = classmethod(from_torchlib)
    try:
        yield True
    finally:
        with _LOCK:
            registry_class.from_torchlib = original


def _copied(registry: Any) -> Any:
    """A registry the exporter may extend (custom ops) without touching the cached one."""
    clone = copy.copy(registry)
    clone.functions = {target: list(metas) for target, metas in registry.functions.items()}
    return clone
