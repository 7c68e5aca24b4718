"""The review as the notebook surfaces show it under the parity table: the first diverging
module (``core/localize``) and the release check (precision, size, latency, the diff).

One rendering for the magic and the widget (the sidebar renders the same fields itself):
``lines(staged, previous)`` gives plain lines, ``html(...)`` a small definition list,
``divergence_html(report)`` the localization's text.
"""

from __future__ import annotations

import html as _html
from typing import Any

from ._display import human_size
from .core.parity import divergence_text


def lines(staged: Any, previous: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """``(label, text)`` pairs: precision, size, latency and, when given, the diff."""
    variant, size = staged.variant, human_size(staged.size_bytes)
    precision = f"{staged.precision} (the model's own)"
    if variant is not None:
        precision = f"{staged.precision} from {variant['from']}: {variant['method']}"
    if ratio := (variant or {}).get("size_ratio"):
        size = f"{size} ({ratio:.2f}x the fp32 artifact)"
    found = [("precision", precision), ("size", size)]
    if (latency := staged.latency) is not None:
        batch = "" if latency.get("batch") is None else f", batch {latency['batch']}"
        text = (
            f"p50 {latency['p50_ms']:.3g} ms, p95 {latency['p95_ms']:.3g} ms in "
            f"{latency['runtime']}; eager p50 {latency['eager_p50_ms']:.3g} ms; on "
            f"{latency['device']}{batch} ({latency['runs']} runs)"
        )
        found.append(("latency", text))
    if previous is not None:
        found.append(("previous", previous_text(previous)))
        found += [("warning", w) for w in previous.get("warnings", [])]
    return found


def previous_text(previous: dict[str, Any]) -> str:
    version = previous.get("previous_version", previous.get("version"))
    parts = [f"version {version}"]
    if previous.get("size_ratio") is not None:
        parts.append(f"size {previous['size_ratio']:.2f}x")
    if previous.get("compared"):
        parts.append(
            f"{previous['compared']}: max abs {_number(previous['max_abs'])}, "
            f"cosine {_number(previous['cosine'], '.4f')}"
        )
    changed = previous.get("signature_changed") or {}
    parts.append(f"signature changed: {', '.join(changed)}" if changed else "same signature")
    parts += previous.get("notes", [])
    return "; ".join(parts)


def html(staged: Any, previous: dict[str, Any] | None = None) -> str:
    rows = "".join(
        f"<dt>{_html.escape(label)}</dt><dd>{_html.escape(text)}</dd>"
        for label, text in lines(staged, previous)
    )
    return f'<dl class="jms-release">{rows}</dl>'


def divergence_html(report: Any) -> str:
    """The first diverging module and its source line, when localized (``divergence_text``)."""
    text = divergence_text(report)
    return f'<pre class="jms-divergence">{_html.escape(text)}</pre>' if text else ""


def _number(value: Any, spec: str = ".3g") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else str(value)
