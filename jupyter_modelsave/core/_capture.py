"""Capturing what exporters print, warn and log, so it lands in a report instead of a notebook.

Python-level output (``print``, ``warnings``, the exporters' loggers, including the torch loggers
that ``torch._logging`` gave a stderr handler of their own) and native output written straight
to file descriptors 1 and 2 (TorchScript's "Torch IR graph at exception" dump comes from C++) are
all collected. A ``TracerWarning`` keeps the file and line that raised it: it tells a Python
``if`` on tensor values in the user's code from torch's own shape checks (``value_conversions``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator

_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript",
            "tensorflow", "absl")  # fmt: skip
_LOGGER_FAMILIES = ("torch", "onnxscript", "onnx_ir")  # their loggers with handlers of their own
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NOISE = ("torchvision is not installed", "isinstance(treespec, LeafSpec)")


@contextlib.contextmanager
def captured_output() -> Iterator[list[str]]:
    """Collect stdout, stderr, warnings and torch's exporter logs into the yielded list."""
    lines: list[str] = []
    out = io.StringIO()
    native: list[str] = []
    handler = logging.StreamHandler(out)
    loggers = _exporter_loggers()
    saved = [(lg.handlers, lg.propagate) for lg in loggers]
    caught: list[warnings.WarningMessage] = []
    try:
        for lg in loggers:
            lg.handlers, lg.propagate = [handler], False
        with (
            warnings.catch_warnings(record=True) as recorded,
            _native_output(native),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(out),
        ):
            warnings.simplefilter("always")
            caught = recorded
            yield lines
    finally:
        for lg, (handlers, propagate) in zip(loggers, saved):
            lg.handlers, lg.propagate = handlers, propagate
        texts = [_warning_text(w) for w in caught] + out.getvalue().splitlines()
        cleaned = (strip_ansi(t).strip() for t in texts + _without_graph_dumps(native))
        lines += dict.fromkeys(t for t in cleaned if t and not any(n in t for n in _NOISE))


def _exporter_loggers() -> list[logging.Logger]:
    """The exporters' loggers: ``_LOGGERS`` and every torch/onnxscript logger with a handler."""
    names = set(_LOGGERS)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        family = name.split(".", 1)[0]
        if family in _LOGGER_FAMILIES and isinstance(logger, logging.Logger) and logger.handlers:
            names.add(name)
    return [logging.getLogger(name) for name in sorted(names)]


def _warning_text(w: warnings.WarningMessage) -> str:
    text = f"{w.category.__name__}: {w.message}"
    if w.category.__name__ == "TracerWarning":
        text += f" [{w.filename}:{w.lineno}]"
    return text


_GRAPH_DUMP = "Torch IR graph at exception"
_GRAPH_LINES = ("%", "return (", "graph(")


def _without_graph_dumps(lines: list[str]) -> list[str]:
    """Native output, with TorchScript's C++ graph dumps (hundreds of lines) cut to one line."""
    kept = []
    for line in lines:
        if line.startswith(_GRAPH_DUMP):
            kept.append(f"{_GRAPH_DUMP} (TorchScript's graph dump, left out)")
        elif not line.startswith(_GRAPH_LINES):
            kept.append(line)
    return kept


_NATIVE_LOCK = threading.RLock()
_native_depth = 0


@contextlib.contextmanager
def _native_output(lines: list[str]) -> Iterator[None]:
    """Collect what native code writes to file descriptors 1 and 2 into ``lines``.

    One thread at a time swaps the descriptors (others wait); nested uses share the outer swap.
    """
    global _native_depth
    with _NATIVE_LOCK:
        _native_depth += 1
        try:
            if _native_depth > 1:
                yield
                return
            with tempfile.TemporaryFile(mode="w+b") as sink:
                saved = _redirect_fds(sink.fileno())
                try:
                    yield
                finally:
                    _restore_fds(saved)
                    sink.seek(0)
                    text = sink.read().decode("utf-8", "replace")
                    lines += [line.strip() for line in text.splitlines() if line.strip()]
        finally:
            _native_depth -= 1


def _redirect_fds(target: int) -> list[tuple[int, int]]:
    saved = []
    for stream, fd in ((sys.__stdout__, 1), (sys.__stderr__, 2)):
        with contextlib.suppress(Exception):  # None (no console) has no flush either
            stream.flush()
        with contextlib.suppress(OSError):
            saved.append((fd, os.dup(fd)))
            os.dup2(target, fd)
    return saved


def _restore_fds(saved: list[tuple[int, int]]) -> None:
    """Flush C's stdio buffers (so native output lands first), then put the descriptors back."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)
    for fd, copy in saved:
        os.dup2(copy, fd)
        os.close(copy)


_CONVERSION = re.compile(
    r"TracerWarning: Converting a tensor to (?:a Python |an? )?(\w+).*\[(.+):(\d+)\]$"
)
DATA_DEPENDENT = ("GuardOnDataDependentSymNode", "data-dependent expression")


def value_conversions(lines: list[str]) -> list[str]:
    """Where an exporter turned tensor values into Python constants, in the user's code.

    TorchScript tracing warns "Converting a tensor to a Python boolean/integer/..." at the line
    that did it; torch's own modules do it for shape checks, so only lines outside torch count.
    torch.export reports a data-dependent guard (``GuardOnDataDependentSymNode``).
    """
    import torch

    torch_dir = os.path.dirname(torch.__file__) + os.sep
    found: list[str] = []
    for line in lines:
        match = _CONVERSION.search(line)
        if match and not match.group(2).startswith(torch_dir):
            found.append(
                "tracing turned a tensor into a Python {} at {}:{}".format(*match.groups())
            )
        elif not match and any(marker in line for marker in DATA_DEPENDENT):
            found.append("torch.export stopped at a data-dependent branch (a Python `if` on "
                         "tensor values)")  # fmt: skip
    return list(dict.fromkeys(found))


def strip_ansi(text: str) -> str:
    """Text without terminal colour codes (the exporters colour their messages)."""
    return _ANSI.sub("", text)


# torch.onnx wraps the real error after a paragraph of generic advice ending in "Next steps:"
_EXCEPTION_SUMMARY = re.compile(r"## Exception summary\s*<class '(?:[\w.]*\.)?(\w+)'>: *(.*)")
MAX_LINE = 300


def first_line(err: BaseException) -> str:
    """The line that says what went wrong, uncoloured, at most ``MAX_LINE`` characters (cut with
    "…"): the first line of the message, or for torch.onnx's wrapped errors the summary's."""
    text = strip_ansi(str(err)).strip()
    summary = _EXCEPTION_SUMMARY.search(text)
    if summary:
        text = f"{summary.group(1)}: {summary.group(2)}"
    line = text.splitlines()[0].strip() if text else ""
    return line if len(line) <= MAX_LINE else f"{line[: MAX_LINE - 1]}…"
