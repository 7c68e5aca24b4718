"""Numerical parity between the live model and an exported artifact.

Checks names, then shapes, then values, per output and per probe, and collects every failure
before judging (as optimum's ``validate_model_outputs`` does). An element fails when
``|artifact - live| > atol + rtol * |live|`` (numpy.isclose's rule); NaNs match only NaNs.
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# cosine similarity above which a failure is "float drift" rather than a broken graph
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
        return (
            f"parity {verdict} on {len(self.probes)} probes "
            f"(atol={self.atol:g}, rtol={self.rtol:g}, worst max_abs={worst:.3g})"
        )

    def _repr_html_(self) -> str:
        return report_html(self)


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
    """Compare one output; shapes must match exactly before values are compared."""
    if live.shape != artifact.shape:
        return OutputDiff(
            name, list(live.shape), math.inf, math.inf, 1.0, 0.0, math.inf,
            shape_mismatch=f"live {list(live.shape)} vs artifact {list(artifact.shape)}",
            passed=False,
        )  # fmt: skip
    ref = live.astype(np.float64)
    got = artifact.astype(np.float64)
    same = (ref == got) | (np.isnan(ref) & np.isnan(got))  # equal infinities and NaN pairs agree
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(got - ref))
    diff = np.where(np.isnan(diff), np.inf, diff)
    scale = np.abs(np.nan_to_num(ref, nan=0.0, posinf=0.0, neginf=0.0))
    bad = diff > atol + rtol * scale
    rel = diff / np.maximum(scale, np.finfo(np.float64).tiny)
    return OutputDiff(
        name=name,
        shape=list(live.shape),
        max_abs=float(diff.max(initial=0.0)),
        max_rel=float(np.where(diff == 0, 0.0, rel).max(initial=0.0)),
        mismatch_fraction=float(bad.mean()) if bad.size else 0.0,
        cosine=_cosine(ref, got),
        min_atol=float(np.maximum(diff - rtol * scale, 0.0).max(initial=0.0)),
        top1_agreement=_top1(ref, got),
        passed=not bool(bad.any()),
    )


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    # elementwise sums, not BLAS dot: BLAS threads would contend with torch's and ORT's
    a, b = np.nan_to_num(a.ravel()), np.nan_to_num(b.ravel())
    na, nb = float(np.sqrt((a * a).sum())), float(np.sqrt((b * b).sum()))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float((a * b).sum() / (na * nb))


def _top1(ref: np.ndarray, got: np.ndarray) -> float | None:
    """Share of rows whose argmax agrees, for outputs that look like class scores [..., classes]."""
    if ref.ndim < 2 or not 2 <= ref.shape[-1] <= 100_000 or ref.size == 0:
        return None
    rows_ref = ref.reshape(-1, ref.shape[-1])
    rows_got = got.reshape(-1, got.shape[-1])
    return float((rows_ref.argmax(-1) == rows_got.argmax(-1)).mean())


def diagnose(probes: list[ProbeResult], atol: float, rtol: float) -> list[str]:
    """Plain-words reasons for failures: drift vs broken graph vs a traced data-dependent branch."""
    notes: list[str] = []
    example = next((p for p in probes if p.name == "example"), None)
    for probe in probes:
        if probe.passed:
            continue
        for out in (o for o in probe.outputs if not o.passed):
            where = f"output {out.name!r} on probe {probe.name!r}"
            if out.shape_mismatch:
                notes.append(
                    f"{where}: shape differs ({out.shape_mismatch}). A dimension was fixed at "
                    "export time; mark it dynamic with dynamic_axes."
                )
            elif out.cosine >= DRIFT_COSINE:
                notes.append(
                    f"{where}: float drift (cosine similarity {out.cosine:.6f}). The values agree "
                    f"in direction; atol={out.min_atol:.3g} would pass at rtol={rtol:g}."
                )
            else:
                notes.append(
                    f"{where}: the artifact computes something different (cosine similarity "
                    f"{out.cosine:.3f}), not rounding error."
                )
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


def report_html(report: ParityReport) -> str:
    colour = "#1a7f37" if report.passed else "#cf222e"
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
    return (
        f'<div class="jms-parity"><p><b style="color:{colour}">{html.escape(report.summary())}</b>'
        f" &middot; reference on {html.escape(report.reference_device)}, TF32 {tf32}</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        + (f"<ul>{notes}</ul>" if notes else "")
        + "</div>"
    )
