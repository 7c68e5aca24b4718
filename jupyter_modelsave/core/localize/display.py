"""The localization as the surfaces show it: HTML for reports, plain text for the magic.

No torch here: ``parity.report_html`` imports it only when a report holds a localization.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..parity import LayerDiff, ParityReport


def divergence_text(report: ParityReport) -> str | None:
    """``First diverging module: 'blocks.2' (Block) at file.py:14`` and the line's code; the
    localization in words when no module diverges; None when nothing was localized."""
    first = report.first_divergence
    if first is None:
        return report.localization
    text = f"First diverging module: {_name(first)} ({first.class_name})"
    if first.source:
        text += f" at {first.source}"
    if first.code:
        text += f"\n    {first.code}"
    if first.module == "":
        text += "\n(only the model's final output differs: every submodule agrees)"
    return text


def localization_html(report: ParityReport) -> str:
    """The first diverging module (with its source line), the sentence, the per-layer table."""
    if report.localization is None and not report.layers:
        return ""
    parts = []
    first = report.first_divergence
    if first is not None:
        source = f" at <code>{html.escape(first.source)}</code>" if first.source else ""
        code = f"<pre>{html.escape(first.code)}</pre>" if first.code else ""
        parts.append(
            f"<p><b>First diverging module:</b> <code>{html.escape(_name(first))}</code> "
            f"({html.escape(first.class_name)}){source}</p>{code}"
        )
    if report.localization:
        parts.append(f"<p>{html.escape(report.localization)}</p>")
    if report.layers:
        parts.append(_layers_table(report.layers, first))
    return f'<div class="jms-localization">{"".join(parts)}</div>'


def _layers_table(layers: list[LayerDiff], first: LayerDiff | None) -> str:
    rows = []
    for layer in layers:
        is_first = first is not None and (layer.module, layer.call) == (first.module, first.call)
        style = ' style="background:rgba(207,34,46,0.22);font-weight:bold"' if is_first else (
            "" if layer.passed else ' style="background:rgba(207,34,46,0.08)"'
        )  # fmt: skip
        call = f" #{layer.call + 1}" if layer.call else ""
        rows.append(
            f"<tr{style}><td><code>{html.escape(_name(layer))}{call}</code></td>"
            f"<td>{html.escape(layer.class_name)}</td><td>{layer.shape}</td>"
            f"<td>{layer.max_abs:.3g}</td><td>{layer.cosine:.6f}</td>"
            f"<td>{'&#10003;' if layer.passed else '&#10007;'}</td></tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("module", "class", "shape", "max abs", "cosine", ""))
    return (
        f"<details{' open' if first is not None else ''}><summary>Per-layer comparison "
        f"({len(layers)} module calls, in the order they finish)</summary>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></details>"
    )


def _name(layer: LayerDiff) -> str:
    return repr(layer.module) if layer.module else "the model"
