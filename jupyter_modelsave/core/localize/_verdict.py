"""From compared module calls to the first diverging module, its source line, and plain words.

The first divergence is the first call, in the order calls finish, whose output differs. When
the artifact's values are compared side by side (ONNX, torch.export), a module's input can
already differ although every module before it agrees: the difference then comes from the code
of the module that called it (its own ``forward``, between submodule calls), so that caller is
named, and so on up while the caller's input differs too. When every submodule agrees and only
the model's own output differs, the model's ``forward`` is named and the text says so.

``source`` is ``file:line`` of the module class's ``forward``: the line of a value tracing baked
in (``report.value_conversions``) or of the node that makes the output (dynamo's stack traces)
when it lies inside that ``forward``, else the ``def`` line. Code defined in a notebook cell (its
"file" is IPython's name for the cell) reads ``Cell In[3], line 14``, as IPython's tracebacks say.
"""

from __future__ import annotations

import inspect
import linecache
import re
import sys
from dataclasses import dataclass
from typing import Any

from ..parity import LayerDiff
from ._calls import Call
from ._compare import Figures

_AT_LINE = re.compile(r" at (.+):(\d+)$")
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


@dataclass
class Outcome:
    layers: list[LayerDiff]
    first: LayerDiff | None
    text: str


def verdict(
    calls: list[Call],
    results: dict[int, Figures],
    inputs_differ: dict[int, bool],
    modules: dict[str, Any],
    mapped: dict[int, Any],
    conversions: list[str],
    probe: str,
    how: str,
) -> Outcome:
    """The per-layer table (finishing order), the first divergence and a sentence about it.

    ``mapped``: the ONNX side's ``_onnx_scopes.Mapped`` of each call (its nodes and their stack
    traces); ``how``: a clause saying how the values were compared (for the sentence).
    """
    hints = [_at_line(c) for c in conversions]

    def layer(call: Call, figures: Figures, culprit: bool = False) -> LayerDiff:
        onnx = mapped.get(call.position)
        traces = [h for t in (onnx.stack_traces if onnx else []) for h in _frames(t)]
        baked = [h for h in hints if h] if culprit else []  # where it went wrong
        source, code = source_of(modules.get(call.module), [*baked, *traces])
        return LayerDiff(call.module, call.class_name, call.index, figures.shape, figures.max_abs,
                         figures.max_rel, figures.cosine, figures.mismatch_fraction, figures.passed,
                         source, code, onnx.nodes if onnx else [])  # fmt: skip

    ordered = sorted((c for c in calls if c.position in results), key=lambda c: c.done)
    layers = [layer(c, results[c.position]) for c in ordered]
    diverging = [c for c in ordered if not results[c.position].passed]
    where = f"on the probe {probe!r} ({len(layers)} module calls compared{how})"
    if not diverging:
        return Outcome(layers, None, _none_differ(where, conversions, calls, modules))
    first = diverging[0]
    culprit = first
    while inputs_differ.get(culprit.position) and culprit.parent is not None:
        culprit = calls[culprit.parent]
    figures = results.get(culprit.position, results[first.position])
    found = layer(culprit, figures, culprit=True)
    return Outcome(layers, found, _sentence(found, first, culprit, ordered, where))


def _sentence(found: LayerDiff, first: Call, culprit: Call, ordered: list[Call], where: str) -> str:
    name = describe(found)
    figures = f"max abs {found.max_abs:.3g}, cosine {found.cosine:.4f}"
    if culprit.module == "":
        inner = [c for c in ordered if c.module != ""]
        if not inner:
            return (
                f"Only the model's final output could be compared {where}: no module inside "
                f"{found.class_name} could be matched in the artifact. The output differs "
                f"({figures}); look at {found.class_name}.forward ({found.source or 'source unknown'})."
            )
        return (
            f"Only the final output differs {where}: every module inside {found.class_name} "
            f"agrees with the artifact, so the difference comes from {found.class_name}.forward's "
            f"own code ({found.source or 'source unknown'}), outside its submodules ({figures})."
        )
    if culprit is not first:
        return (
            f"{name} is where the artifact starts to differ {where}: the first differing output "
            f"is that of {first.module!r}, whose input already differs, so the difference comes "
            f"from {found.class_name}.forward's own code before it calls {first.module!r} "
            f"({figures})."
        )
    return (
        f"{name} is the first module whose output differs {where}; every module before it "
        f"agrees ({figures})."
    )


def describe(layer: LayerDiff) -> str:
    """``'blocks.2' (Block, file.py:12)``, or ``the model (Net, ...)`` for the model itself."""
    name = repr(layer.module) if layer.module else "the model"
    return f"{name} ({layer.class_name}, {layer.source or 'source unknown'})"


def _none_differ(
    where: str, conversions: list[str], calls: list[Call], modules: dict[str, Any]
) -> str:
    text = f"No module's output differs {where}."
    for conversion in conversions:
        hint = _at_line(conversion)
        owners = _owners(hint, calls, modules) if hint else []
        if owners:
            text += (
                f" The report fails because {conversion}, inside the forward of "
                f"{', '.join(owners)}: no probe took the other side of that branch, so none "
                "shows where the artifact would differ."
            )
    return text


def _owners(hint: tuple[str, int], calls: list[Call], modules: dict[str, Any]) -> list[str]:
    """The modules whose class's ``forward`` holds the line ``hint``."""
    names = []
    for module in dict.fromkeys(c.module for c in calls):
        span = _forward_span(modules.get(module))
        if span and span[0] == hint[0] and span[1] <= hint[1] <= span[2]:
            names.append(repr(module) if module else "the model")
    return names


def source_of(module: Any, hints: list[tuple[str, int]]) -> tuple[str | None, str | None]:
    """``(file:line, that line's text)`` for a module's ``forward`` (see the module docstring)."""
    span = _forward_span(module)
    if span is None:
        return None, None
    path, start, end = span
    line = next((n for f, n in hints if f == path and start <= n <= end), start)
    code = linecache.getline(path, line).strip() or None
    cell = _cell_label(path)
    return (f"{cell}, line {line}" if cell else f"{path}:{line}"), code


def _cell_label(path: str) -> str | None:
    """``Cell In[3]`` when ``path`` is IPython's name for a cell it ran (no IPython import)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    format_name = getattr(getattr(shell, "compile", None), "format_code_name", None)
    try:
        label = format_name(path) if callable(format_name) else None
    except Exception:  # another IPython's API: keep the path
        return None
    return " ".join(label) if isinstance(label, tuple) and len(label) == 2 else None


def _forward_span(module: Any) -> tuple[str, int, int] | None:
    forward = getattr(type(module), "forward", None) if module is not None else None
    try:
        path = inspect.getsourcefile(forward)  # type: ignore[arg-type]
        lines, start = inspect.getsourcelines(forward)  # type: ignore[arg-type]
    except (TypeError, OSError):
        return None
    if path is None:
        return None
    return path, start, start + len(lines) - 1


def _at_line(conversion: str) -> tuple[str, int] | None:
    match = _AT_LINE.search(conversion)
    return (match.group(1), int(match.group(2))) if match else None


def _frames(trace: str) -> list[tuple[str, int]]:
    """(file, line) of each frame of a dynamo stack trace, innermost first."""
    return [(f, int(n)) for f, n in reversed(_FRAME.findall(trace))]
