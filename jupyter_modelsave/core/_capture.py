"""Capturing what exporters print, warn and log, so it lands in a report instead of a notebook."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator

_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NOISE = ("torchvision is not installed", "isinstance(treespec, LeafSpec)")


@contextlib.contextmanager
def captured_output() -> Iterator[list[str]]:
    """Collect stdout, stderr, warnings and torch's exporter logs into the yielded list."""
    lines: list[str] = []
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    saved = [(lg.handlers, lg.propagate) for lg in loggers]
    caught: list[warnings.WarningMessage] = []
    try:
        for lg in loggers:
            lg.handlers, lg.propagate = [handler], False
        with (
            warnings.catch_warnings(record=True) as recorded,
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(out),
        ):
            warnings.simplefilter("always")
            caught = recorded
            yield lines
    finally:
        for lg, (handlers, propagate) in zip(loggers, saved):
            lg.handlers, lg.propagate = handlers, propagate
        texts = [f"{w.category.__name__}: {w.message}" for w in caught]
        texts += out.getvalue().splitlines()
        seen: set[str] = set()
        for text in texts:
            text = strip_ansi(text).strip()
            if text and text not in seen and not any(n in text for n in _NOISE):
                seen.add(text)
                lines.append(text)


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
