"""Numerical parity between the live model and an exported artifact.

Checks names, then shapes, then values, per output and per probe, and collects every failure
before judging (as optimum's ``validate_model_outputs`` does). An element fails when
``|artifact - live| > atol + rtol * |live|`` (numpy.isclose's rule); NaNs match only NaNs.

Outputs below ``atol``: when the largest ``|live|`` of an output (its *peak*) is above zero but
below ``atol``, that rule would pass any artifact whose outputs are near zero (random-init nets
can output ~1e-9). Such an output is judged relative to its own scale instead: ``atol`` becomes
``rtol * peak``, and the cosine similarity must also reach ``DRIFT_COSINE``.
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# cosine similarity above which a failure is "float drift" rather than a broken graph; outputs
# below atol must also reach it to pass
DRIFT_COSINE = 0.999


@dataclass
class OutputDiff:
    """How far one artifact output is from the live model's, on one probe."""

    name: str
    shape: list[int]
    max_abs: float
    max_rel: float
    mismatch_fraction: float
    cosine: float
    min_atol: float
    top1_agreement: float | None = None
    shape_mismatch: str | None = None
    passed: bool = True
    peak: float | None = None  # largest finite |live| value
    scaled_atol: float | None = None  # the atol used instead when 0 < peak < atol: rtol * peak


@dataclass
class LayerDiff:
    """How far one module's output in the artifact is from the live model's (``localize``)."""

    module: str  # qualified name in the live model; "" for the model itself
    class_name: str
    call: int  # which call of the module on the probe (0: the first)
    shape: list[int]
    max_abs: float
    max_rel: float
    cosine: float
    mismatch_fraction: float
    passed: bool
    source: str | None = None  # file:line of the module's forward code, when known
    code: str | None = None  # the text of that line
    nodes: list[str] = field(default_factory=list)  # artifact nodes that compute it (ONNX)


@dataclass
class ProbeResult:
    name: str
    passed: bool
    outputs: list[OutputDiff]


@dataclass
class ParityReport:
    """Parity of an artifact against the live model. ``outputs`` holds the worst probe per output."""

    passed: bool
    atol: float
    rtol: float
    probes: list[ProbeResult]
    reference_device: str
    tf32: bool
    diagnosis: list[str] = field(default_factory=list)
    kind: str = "outputs"  # "outputs" (values compared) or "weights" (bitwise round trip)
    # where the exporter turned tensor values into Python constants: fails the report
    value_conversions: list[str] = field(default_factory=list)
    # where the artifact starts to differ (``core/localize``): filled when parity fails, or by
    # ``staged.localize()``; ``localization`` says it in plain words
    first_divergence: LayerDiff | None = None
    layers: list[LayerDiff] = field(default_factory=list)
    localization: str | None = None
    # the artifact's precision ("fp32", "fp16", "bf16", "int8"; see core/precision.py) and, for
    # a variant, the task-level agreement it was judged by
    precision: str = "fp32"
    agreement: dict[str, Any] | None = None

    @property
    def outputs(self) -> list[OutputDiff]:
        worst: dict[str, OutputDiff] = {}
        for probe in self.probes:
            for out in probe.outputs:
                if out.name not in worst or _badness(out) > _badness(worst[out.name]):
                    worst[out.name] = out
        return list(worst.values())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outputs"] = [asdict(o) for o in self.outputs]
        return _json_safe(data)

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        worst = max((o.max_abs for o in self.outputs), default=0.0)
        text = (
            f"parity {verdict} on {len(self.probes)} probes "
            f"(atol={self.atol:g}, rtol={self.rtol:g}, worst max_abs={worst:.3g})"
        )
        if self.value_conversions:
            text += f": the exporter baked in tensor values ({self.value_conversions[0]})"
        if self.agreement is not None:
            text += _agreement_text(self.agreement)
        return f"{self.precision} {text}" if self.precision != "fp32" else text

    def _repr_html_(self) -> str:
        return report_html(self)


def _agreement_text(agreement: dict[str, Any]) -> str:
    """ ", top-1 agreement 98.4%, cosine 0.9993": the worst value of each agreement metric."""
    worst: dict[str, float] = {}
    for result in agreement["outputs"].values():
        if result["value"] is not None:
            worst[result["metric"]] = min(worst.get(result["metric"], 1.0), result["value"])
    parts = [f"top-1 agreement {worst['top1']:.1%}"] if "top1" in worst else []
    parts += [f"cosine {worst['cosine']:.4f}"] if "cosine" in worst else []
    judged = "" if agreement["element_wise"] else ", judged by agreement"
    return f", {', '.join(parts)}{judged}" if parts else judged


def _badness(out: OutputDiff) -> tuple:
    return (not out.passed, out.shape_mismatch is not None, out.mismatch_fraction, out.max_abs)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def compare_output(
    name: str, live: np.ndarray, artifact: np.ndarray, atol: float, rtol: float
) -> OutputDiff:
    """Compare one output; shapes must match exactly before values are compared.

    Streams over the output in chunks of whole rows, so the float64 temporaries stay a few
    hundred kilobytes (cache-sized) whatever the output's size, and every statistic is gathered in
    the same pass.
    """
    if live.shape != artifact.shape:
        return failed_output(
            name, live.shape, f"live {list(live.shape)} vs artifact {list(artifact.shape)}"
        )
    last = live.shape[-1] if live.ndim else 1
    rows = live.ndim >= 2 and 2 <= last <= 100_000 and live.size > 0  # class scores [..., classes]
    shape = (-1, last) if rows else (-1,)
    ref, got = live.reshape(shape), artifact.reshape(shape)
    step = max(1, _CHUNK // last) if rows else _CHUNK
    peak = _peak(ref, step)
    scaled = rtol * peak if 0 < peak < atol else None
    stats = _Running(atol if scaled is None else scaled, rtol)
    for start in range(0, len(ref), step):
        stats.add(ref[start : start + step], got[start : start + step], rows)
    diff = stats.result(name, list(live.shape), live.size, rows)
    diff.peak, diff.scaled_atol = peak, scaled
    if scaled is not None and diff.cosine < DRIFT_COSINE:
        diff.passed = False
    return diff


def failed_output(name: str, shape: Any, why: str = "missing from the artifact") -> OutputDiff:
    """An output whose values could not be compared: ``why`` (shapes differ, output missing)."""
    inf = math.inf
    return OutputDiff(name, list(shape), inf, inf, 1.0, 0.0, inf, shape_mismatch=why, passed=False)


def _peak(ref: np.ndarray, step: int) -> float:
    """The largest finite ``|value|``, chunk by chunk (no full-size temporary)."""
    peak = 0.0
    for start in range(0, len(ref), step):
        chunk = np.abs(ref[start : start + step].astype(np.float64))
        chunk[~np.isfinite(chunk)] = 0.0
        peak = max(peak, float(chunk.max(initial=0.0)))
    return peak


_CHUNK = 1 << 16  # elements per step: 512 KiB per float64 temporary


class _Running:
    """Statistics of ``|artifact - live|`` accumulated chunk by chunk (see ``compare_output``)."""

    def __init__(self, atol: float, rtol: float) -> None:
        self.atol, self.rtol = atol, rtol
        self.bad = self.top1 = 0
        self.max_abs = self.max_rel = self.min_atol = 0.0
        self.aa = self.bb = self.ab = 0.0  # for the cosine similarity

    def add(self, live: np.ndarray, artifact: np.ndarray, rows: bool) -> None:
        ref = live.astype(np.float64).ravel()
        got = artifact.astype(np.float64).ravel()
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(got - ref)
            odd = np.isnan(diff)  # NaN on either side, or equal infinities
            if odd.any():
                same = (ref == got) | (np.isnan(ref) & np.isnan(got))
                diff[odd] = np.inf
                diff[same] = 0.0
            scale = np.abs(ref)
            finite = bool(np.isfinite(scale).all())
            if not finite:
                scale[~np.isfinite(scale)] = 0.0
            slack = self.rtol * scale
            self.bad += int(np.count_nonzero(diff > self.atol + slack))
            self.max_abs = max(self.max_abs, float(diff.max(initial=0.0)))
            self.min_atol = max(self.min_atol, float((diff - slack).max(initial=0.0)))
            np.maximum(scale, np.finfo(np.float64).tiny, out=scale)
            self.max_rel = max(self.max_rel, float((diff / scale).max(initial=0.0)))
            # einsum's own loop, not BLAS: BLAS threads would contend with torch's and ORT's
            if not (finite and not odd.any() and np.isfinite(got).all()):
                ref, got = np.nan_to_num(ref), np.nan_to_num(got)
            self.aa += float(np.einsum("i,i->", ref, ref))
            self.bb += float(np.einsum("i,i->", got, got))
            self.ab += float(np.einsum("i,i->", ref, got))
        if rows:
            self.top1 += int(np.count_nonzero(live.argmax(-1) == artifact.argmax(-1)))

    def result(self, name: str, shape: list[int], size: int, rows: bool) -> OutputDiff:
        na, nb = math.sqrt(self.aa), math.sqrt(self.bb)
        cosine = self.ab / (na * nb) if na and nb else float(na == nb)
        n_rows = size // shape[-1] if rows else 0
        return OutputDiff(
            name=name,
            shape=shape,
            max_abs=self.max_abs,
            max_rel=self.max_rel,
            mismatch_fraction=self.bad / size if size else 0.0,
            cosine=cosine,
            min_atol=self.min_atol,
            top1_agreement=self.top1 / n_rows if rows else None,
            passed=self.bad == 0,
        )


def diagnose(probes: list[ProbeResult], atol: float, rtol: float) -> list[str]:
    """Plain-words reasons for failures: drift vs broken graph vs a traced data-dependent branch.

    One note per output and kind of failure, naming every probe it happened on (the same
    explanation is not repeated per probe).
    """
    notes: list[str] = []
    example = next((p for p in probes if p.name == "example"), None)
    groups: dict[tuple[str, str], list[tuple[str, OutputDiff]]] = {}
    for probe in probes:
        for out in (o for o in probe.outputs if not o.passed):
            groups.setdefault((out.name, _failure_kind(out)), []).append((probe.name, out))
    for (name, kind), failures in groups.items():
        outs = [o for _, o in failures]
        where = f"output {name!r} on {_probe_list([p for p, _ in failures])}"
        if kind == "tiny":
            worst = max(outs, key=_relative_error)
            notes.append(f"{where}: {_tiny_note(worst, atol)}")
        elif kind == "shape":
            shapes = "; ".join(dict.fromkeys(str(o.shape_mismatch) for o in outs))
            notes.append(
                f"{where}: shape differs ({shapes}). A dimension was fixed at export time; mark "
                "it dynamic with dynamic_axes."
            )
        elif kind == "drift":
            cosine = min(o.cosine for o in outs)
            needed = max(o.min_atol for o in outs)
            notes.append(
                f"{where}: float drift (cosine similarity {cosine:.6f}). The values agree in "
                f"direction; atol={needed:.3g} would pass at rtol={rtol:g}."
            )
        else:
            cosine = max(o.cosine for o in outs)
            notes.append(
                f"{where}: the artifact computes something different (cosine similarity "
                f"{cosine:.3f}), not rounding error."
            )
    notes += _tiny_outputs_that_passed(probes, atol)
    failed_others = [p.name for p in probes if p is not example and not p.passed]
    if example is not None and example.passed and failed_others:
        notes.append(
            f"The example input agrees but {', '.join(map(repr, failed_others))} diverge: the model "
            "most likely has a data-dependent branch (a Python `if` on tensor values) that tracing "
            "baked in, so the artifact always takes the branch the example input took. Rewrite it "
            "with torch.where or torch.cond, or check that every input you will use behaves like "
            "the example."
        )
    return notes


def _tiny_note(out: OutputDiff, atol: float) -> str:
    """Why an output below atol was judged relative to its own scale, and how it fared."""
    peak = out.peak or 0.0
    verdict = "agrees" if out.passed else "does NOT agree"
    return (
        f"its values are tiny (largest |value| {peak:.3g}, below atol={atol:g}), so atol alone "
        f"would pass any near-zero artifact. Judged against its own scale instead (atol = rtol "
        f"x {peak:.3g} = {out.scaled_atol:.3g}, cosine >= {DRIFT_COSINE}), the artifact "
        f"{verdict}: max error {out.max_abs:.3g} ({out.max_abs / peak:.2g} of the largest value), "
        f"cosine {out.cosine:.6f}."
    )


def _tiny_outputs_that_passed(probes: list[ProbeResult], atol: float) -> list[str]:
    """One note per output that was judged relative to its scale and passed on every probe."""
    scaled = [o for probe in probes for o in probe.outputs if o.scaled_atol is not None]
    failed = {o.name for o in scaled if not o.passed}
    names = dict.fromkeys(o.name for o in scaled if o.name not in failed)
    worst = (max((o for o in scaled if o.name == n), key=_relative_error) for n in names)
    return [f"output {o.name!r}: {_tiny_note(o, atol)}" for o in worst]


def _relative_error(out: OutputDiff) -> float:
    return out.max_abs / (out.peak or 1)


def _failure_kind(out: OutputDiff) -> str:
    if out.scaled_atol is not None:
        return "tiny"
    if out.shape_mismatch:
        return "shape"
    return "drift" if out.cosine >= DRIFT_COSINE else "different"


def _probe_list(names: list[str]) -> str:
    quoted = ", ".join(map(repr, names))
    return f"probe {quoted}" if len(names) == 1 else f"probes {quoted}"


# The verdict's colour is a border, never the text's: the text keeps the theme's own colour, so
# it reads in light and dark themes alike (JupyterLab's variables, with fallbacks elsewhere).
_VERDICT_STYLE = "padding:2px 8px;border-left:4px solid {}"
_PASS_COLOUR = "var(--jp-success-color1, #1a7f37)"
_FAIL_COLOUR = "var(--jp-error-color1, #cf222e)"


def report_html(report: ParityReport) -> str:
    """The report as an HTML table (notebooks: ``_repr_html_``, the magic and the widget)."""
    style = _VERDICT_STYLE.format(_PASS_COLOUR if report.passed else _FAIL_COLOUR)
    verdict = "&#10003;" if report.passed else "&#10007;"
    rows = []
    for probe in report.probes:
        for o in probe.outputs:
            mark = "&#10003;" if o.passed else "&#10007;"
            bg = "" if o.passed else ' style="background:rgba(207,34,46,0.12)"'
            top1 = "" if o.top1_agreement is None else f"{o.top1_agreement:.1%}"
            rows.append(
                f"<tr{bg}><td>{html.escape(probe.name)}</td><td>{html.escape(o.name)}</td>"
                f"<td>{html.escape(o.shape_mismatch or str(o.shape))}</td><td>{o.max_abs:.3g}</td>"
                f"<td>{o.max_rel:.3g}</td><td>{o.mismatch_fraction:.2%}</td><td>{o.cosine:.6f}</td>"
                f"<td>{o.min_atol:.3g}</td><td>{top1}</td><td>{mark}</td></tr>"
            )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("probe", "output", "shape", "max abs", "max rel", "mismatched", "cosine",
                  "min atol", "top-1", "")
    )  # fmt: skip
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.diagnosis)
    tf32 = "on" if report.tf32 else "off"
    where = localization_html(report)  # the first diverging module first
    return (
        f'<div class="jms-parity"><p style="{style}"><b>{verdict} {html.escape(report.summary())}</b>'
        f" &middot; reference on {html.escape(report.reference_device)}, TF32 {tf32}</p>{where}"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        + (f"<ul>{notes}</ul>" if notes else "")
        + "</div>"
    )


# The localization (``core/localize``) as surfaces show it: HTML, and plain text for the magic.


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
