"""The parity report of a generation export: per-graph probes plus greedy loops, side by side.

The step logits of each greedy run are probes of their own in the report's table
(``greedy: <run>``, one output per step); ``generation`` holds the token sequences. Steps after
the first token that differs are not compared: from there the two loops continue from different
sequences.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from ..parity import ParityReport


@dataclass
class GreedyRun:
    """One greedy loop of the artifact against the live model's ``generate``."""

    name: str  # "prompt", "left-padded batch of 2"
    prompt_lengths: list[int]  # real (unpadded) tokens per row
    live_tokens: list[list[int]]
    artifact_tokens: list[list[int]]
    steps_compared: int  # logits compared up to and including the first different token
    passed: bool
    first_difference: int | None = None  # 1-based step of the first different token
    near_tie: bool = False  # at that step the live model's top two logits were within tolerance

    @property
    def tokens_identical(self) -> bool:
        return self.live_tokens == self.artifact_tokens


@dataclass
class GenerationReport(ParityReport):
    """``ParityReport`` with the greedy runs; ``passed`` needs identical tokens too."""

    steps: int = 0
    generation: list[GreedyRun] = field(default_factory=list)

    def summary(self) -> str:
        text = super().summary()
        identical = sum(r.tokens_identical for r in self.generation)
        return (
            f"{text}; greedy {self.steps} steps: tokens identical in {identical} of "
            f"{len(self.generation)} runs"
        )

    def _repr_html_(self) -> str:
        return super()._repr_html_() + tokens_html(self.generation)


def tokens_html(runs: list[GreedyRun]) -> str:
    """A table of the live and the artifact's tokens per run and row, differences marked."""
    rows = []
    for run in runs:
        for row, (live, got) in enumerate(zip(run.live_tokens, run.artifact_tokens)):
            cells = [_tokens_cell(live, got, mark=False), _tokens_cell(got, live, mark=True)]
            verdict = "&#10003;" if live == got else "&#10007;"
            rows.append(
                f"<tr><td>{html.escape(run.name)}</td><td>{row}</td>"
                f"<td>{run.prompt_lengths[row]}</td><td>{cells[0]}</td><td>{cells[1]}</td>"
                f"<td>{verdict}</td></tr>"
            )
    head = "".join(f"<th>{h}</th>" for h in ("greedy run", "row", "prompt tokens",
                                              "live generate()", "artifact", ""))  # fmt: skip
    return (
        f'<div class="jms-generation"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _tokens_cell(tokens: list[int], other: list[int], *, mark: bool) -> str:
    parts = []
    for i, token in enumerate(tokens):
        differs = i >= len(other) or other[i] != token
        parts.append(f"<b>{token}</b>" if mark and differs else str(token))
    return "<code>" + " ".join(parts) + "</code>"
