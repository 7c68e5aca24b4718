"""torch.onnx's own steps as ``stage`` progress, instead of one "export" step for all of them.

The dynamo exporter announces its steps ("Obtain model graph ...", "Run decompositions...",
"Translate the graph into ONNX...", ...) through a printer that ``verbose=False`` silences. This
module wraps the functions that make that printer (``_verbose_printer`` in
``torch.onnx._internal.exporter._core`` and ``._capture_strategies``, private names of torch
2.13): inside ``exporter_steps`` the printer of *this thread* also reports each step, anywhere
else it is torch's own. Wrapped once, never unwrapped, so concurrent stages cannot race. When torch
renames them, staging still works with the coarse "export" step and
``tests/test_progress.py::test_the_dynamo_exporter_reports_its_own_steps`` fails.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

_PRINTER_MODULES = (
    "torch.onnx._internal.exporter._core",
    "torch.onnx._internal.exporter._capture_strategies",
)
# message start -> (step name, how far through the exporter's work it is)
STEPS = {
    "Obtain model graph": ("tracing (torch.export)", 0.1),
    "Run decomposition": ("decompositions", 0.45),
    "Translate the graph into ONNX": ("translating to ONNX", 0.7),
    "Optimize the ONNX graph": ("optimizing", 0.85),
    "Check the ONNX model": ("checking", 0.95),
}

_LISTENER = threading.local()
_WRAPPED: set[str] = set()
_LOCK = threading.Lock()


@contextlib.contextmanager
def exporter_steps(
    progress: Callable[[str, float], None], start: float, end: float
) -> Iterator[None]:
    """Within the block, each step torch.onnx announces is reported as ``progress("export:
    <step>", fraction)``, the fraction between ``start`` and ``end``."""

    def on_message(text: str) -> None:
        for prefix, (step, share) in STEPS.items():
            if text.startswith(prefix) and not text.endswith(("✅", "❌")):
                progress(f"export: {step}", start + (end - start) * share)
                return

    _wrap_printers()
    previous = getattr(_LISTENER, "on_message", None)
    _LISTENER.on_message = on_message
    try:
        yield
    finally:
        _LISTENER.on_message = previous


def _wrap_printers() -> None:
    with _LOCK:
        for name in _PRINTER_MODULES:
            if name in _WRAPPED:
                continue
            try:
                module = importlib.import_module(name)
                original = module._verbose_printer
            except (ImportError, AttributeError):
                continue  # another torch: only the coarse "export" step
            module._verbose_printer = _reporting(original)
            _WRAPPED.add(name)


def _reporting(
    original: Callable[[Any], Callable[..., None]],
) -> Callable[[Any], Callable[..., None]]:
    """A ``_verbose_printer`` that also tells this thread's listener, when it has one."""

    def make_printer(verbose: Any) -> Callable[..., None]:
        printer = original(verbose)
        on_message = getattr(_LISTENER, "on_message", None)
        if on_message is None:
            return printer

        def print_and_report(*args: Any, **kwargs: Any) -> None:
            with contextlib.suppress(Exception):  # a step name is never worth a failed export
                on_message(" ".join(str(a) for a in args).strip())
            printer(*args, **kwargs)

        return print_and_report

    return make_printer
