"""Reuse torch.onnx's torchlib registry across exports in one process.

torch.onnx's dynamo exporter rebuilds ``ONNXRegistry.from_torchlib()`` on every call (~1.3 s of a
~2.3 s export of a small model on a 2-core CPU). In a long-lived kernel that work is the same every
time, so while jupyter_modelsave exports it swaps in a memoised ``from_torchlib`` that hands out a
copy of the registry built once per opset. This reaches into torch internals, so it is guarded:
only torch versions in ``TESTED`` use it, anything unexpected falls back to torch's own call, and
the test suite checks that the ONNX graph is identical to a bare ``torch.onnx.export``'s.

A registry for a new opset is derived, not rebuilt: torch builds every torchlib function, then keeps
per operator the implementations of the highest opset up to the one asked for
(``_cleanup_registry_based_on_opset_version``). The functions before that filter are kept once, and
each opset's registry is that filter run on a copy of them (a test compares it with torch's own).
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Iterator
from typing import Any

import torch

TESTED = ("2.9", "2.10", "2.11", "2.12", "2.13")
_CACHE: dict[tuple[Any, int | str], Any] = {}  # (class, opset or "unfiltered")
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
        opset = kwargs.get("opset_version", args[0] if args else _default_opset())
        with _LOCK:
            base = _CACHE.get((cls, opset))
            if base is None:
                base = _CACHE[(cls, opset)] = _for_opset(cls, _unfiltered(cls, original), opset)
        return _copied(base)

    with _LOCK:
        registry_class.from_torchlib = classmethod(from_torchlib)
    try:
        yield True
    finally:
        with _LOCK:
            registry_class.from_torchlib = original


def _default_opset() -> int:
    from torch.onnx._internal.exporter._constants import TORCHLIB_OPSET

    return TORCHLIB_OPSET


def _unfiltered(cls: Any, original: Any) -> Any:
    """torch's registry before it drops the functions of other opsets (built once per class)."""
    raw = _CACHE.get((cls, "unfiltered"))
    if raw is None:

        class Unfiltered(cls):  # type: ignore[misc, valid-type]
            def _cleanup_registry_based_on_opset_version(self) -> None:
                pass

        raw = _CACHE[(cls, "unfiltered")] = original.__func__(Unfiltered)
    return raw


def _for_opset(cls: Any, raw: Any, opset: int) -> Any:
    """The registry torch's ``from_torchlib(opset)`` builds, from the unfiltered one."""
    registry = _copied(raw)
    registry.__class__ = cls
    registry._opset_version = opset
    registry._cleanup_registry_based_on_opset_version()
    return registry


def _copied(registry: Any) -> Any:
    """A registry the exporter may extend (custom ops) without touching the cached one."""
    clone = copy.copy(registry)
    clone.functions = {target: list(metas) for target, metas in registry.functions.items()}
    return clone
