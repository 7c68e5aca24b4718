"""Parity of a generation export: each graph on probes of its own, then greedy loops.

The generic probes (``inputs.make_probes``) resize each dynamic axis on its own, which a graph
with a past cannot take (``attention_mask`` covers past + new tokens). Each graph gets probes
that are valid calls instead, run on the wrapper (the live model) and on the artifact:

- causal LM: the prompt with an empty past; one step through the past the live model returned
  for it; the left-padded batch of 2; a random past of 5 with 3 new tokens;
- seq2seq: the encoder on the prompt and on the left-padded batch; the decoder's first step
  (empty past), one step through the past, and a random past.

Then ``steps`` greedy steps (default 8) with the artifact (``loop.OnnxGreedy``) against the live
model's ``generate(do_sample=False)``, on the prompt and on a left-padded batch of 2 made from it
(its first row, and the same row with its first third replaced by padding). Tokens must be
identical, and each step's logits within the tolerances.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import _ort
from .._capture import captured_output
from ..errors import ExportError, ModelSaveError
from ..frameworks.torch import device_of, to_numpy
from ..job import Progress
from ..model_state import preserved, reference_mode
from ..parity import ProbeResult, compare_output, diagnose
from . import graph_file
from .graphs import Graph
from .loop import Greedy, OnnxGreedy, live_greedy, positions_of
from .plan import SEQ2SEQ, GenerationPlan
from .report import GenerationReport, GreedyRun

Feeds = dict[str, torch.Tensor]


def generation_parity(model: torch.nn.Module, plan: GenerationPlan, graphs: list[Graph],
                      artifact: Any, prompt: tuple[torch.Tensor, torch.Tensor], steps: int,
                      atol: float, rtol: float, progress: Progress,
                      value_conversions: list[str]) -> GenerationReport:  # fmt: skip
    """Probe every graph, then compare greedy loops; ``artifact`` is the staged path."""
    sessions = {g.role: _session(graph_file(artifact, g.role), g.role) for g in graphs}
    by_role = {g.role: g for g in graphs}
    probes: list[ProbeResult] = []
    runs: list[GreedyRun] = []
    with preserved(model), reference_mode():
        progress("parity: graphs", 0.6)
        for role, probe_name, feeds in _probes(model, plan, by_role, prompt):
            names = by_role[role].job.output_names
            live = dict(zip(names, (to_numpy(t) for t in _live(by_role[role], feeds))))
            got = _run(sessions[role], feeds, f"{role}: {probe_name}")
            if plan.family != SEQ2SEQ:
                live, got = _without_padding(live, feeds), _without_padding(got, feeds)
            probes.append(_compare(f"{role}: {probe_name}", names, live, got, atol, rtol))
        generator = OnnxGreedy(plan, sessions["decoder"], sessions.get("encoder"))
        for i, (run_name, ids, mask) in enumerate(_greedy_prompts(plan, prompt)):
            progress(f"parity: greedy {run_name}", 0.75 + 0.2 * i)
            with captured_output():  # generate()'s notices stay out of the notebook
                live = live_greedy(model, plan, ids, mask, steps)
            got = _greedy(generator, ids, mask, steps, run_name)
            run, step_probe = _compare_runs(run_name, mask, live, got, atol, rtol)
            runs.append(run)
            probes.append(step_probe)
    notes = diagnose(probes, atol, rtol) + [_run_note(r, steps) for r in runs if not r.passed]
    return GenerationReport(
        passed=all(p.passed for p in probes) and all(r.passed for r in runs)
        and not value_conversions,
        atol=atol, rtol=rtol, probes=probes, reference_device=device_of(model), tf32=False,
        diagnosis=notes, value_conversions=list(value_conversions), steps=steps, generation=runs,
    )  # fmt: skip


def _session(path: Any, role: str) -> Any:
    try:
        external = (path.parent / "model.onnx.data").exists()
        return _ort.session(path, map_weights=external, spin=False)
    except Exception as err:  # ORT raises its own types
        raise ExportError(
            f"The staged {role} graph could not be opened in ONNX Runtime: {type(err).__name__}: "
            f"{err}. Try another exporter or opset."
        ) from err


def _live(graph: Graph, feeds: Feeds) -> list[torch.Tensor]:
    output = graph.module(*(feeds[n] for n in graph.job.input_names))
    return list(output) if isinstance(output, tuple) else [output]


def _run(session: Any, feeds: Feeds, probe: str) -> dict[str, np.ndarray]:
    wanted = {i.name for i in session.get_inputs()}
    try:
        return _ort.run_named(session, {n: to_numpy(t) for n, t in feeds.items() if n in wanted})
    except ModelSaveError:
        raise
    except Exception as err:  # ORT
        raise ExportError(
            f"The staged graph failed on the parity probe {probe!r}, where the live model runs: "
            f"{type(err).__name__}: {err}."
        ) from err


def _compare(name: str, names: list[str], live: dict[str, np.ndarray], got: dict[str, np.ndarray],
             atol: float, rtol: float) -> ProbeResult:  # fmt: skip
    outputs = [compare_output(n, live[n], got[n], atol, rtol) for n in names]
    return ProbeResult(name, all(o.passed for o in outputs), outputs)


def _without_padding(outputs: dict[str, np.ndarray], feeds: Feeds) -> dict[str, np.ndarray]:
    """A causal LM's outputs with the padded positions set to 0 (on both sides of a comparison).

    A left pad attends to no token (the mask hides every key before and at it), so what a graph
    computes there is undefined and differs between implementations; no later token reads it.
    """
    mask = to_numpy(feeds["attention_mask"]).astype(bool)
    if mask.all():
        return outputs
    cleared = {}
    for name, value in outputs.items():
        length = value.shape[1] if name == "logits" else value.shape[2]
        keep = mask[:, -length:]
        shape = (*keep.shape, 1) if name == "logits" else (keep.shape[0], 1, keep.shape[1], 1)
        cleared[name] = np.where(keep.reshape(shape), value, 0).astype(value.dtype)
    return cleared


def _probes(model: torch.nn.Module, plan: GenerationPlan, graphs: dict[str, Graph],
            prompt: tuple[torch.Tensor, torch.Tensor]) -> list[tuple[str, str, Feeds]]:  # fmt: skip
    """(graph role, probe name, inputs by graph name) for every probe, in order."""
    ids, mask = prompt
    padded_ids, padded_mask = left_padded(plan, ids, mask)
    if plan.family != SEQ2SEQ:
        first = _causal_feeds(plan, ids, mask, _empty_past(plan, ids))
        second = _next_step(plan, graphs["decoder"], first)
        return [
            ("decoder", "prefill (empty past)", first),
            ("decoder", "one step through the past", second),
            ("decoder", "prefill, left-padded batch of 2 (pads not compared)",
             _causal_feeds(plan, padded_ids, padded_mask, _empty_past(plan, padded_ids))),
            ("decoder", "random past (5) + 3 tokens", _random_causal(plan, ids)),
        ]  # fmt: skip
    encoder = graphs["encoder"].module
    states = encoder(ids, mask)
    start = torch.full((ids.shape[0], 1), plan.decoder_start_token_id or 0, device=ids.device)
    first = {"input_ids": start, "encoder_attention_mask": mask, "encoder_hidden_states": states,
             **_empty_past(plan, ids)}  # fmt: skip
    return [
        ("encoder", "prompt", {"input_ids": ids, "attention_mask": mask}),
        ("encoder", "left-padded batch of 2", {"input_ids": padded_ids,
                                               "attention_mask": padded_mask}),
        ("decoder", "first step (empty past)", first),
        ("decoder", "one step through the past", _next_step(plan, graphs["decoder"], first)),
        ("decoder", "random past (5)", _random_seq2seq(plan, states, mask)),
    ]  # fmt: skip


def _empty_past(plan: GenerationPlan, ids: torch.Tensor, length: int = 0) -> Feeds:
    shape = (ids.shape[0], plan.kv_heads, length, plan.head_dim)
    dtype = getattr(torch, plan.kv_dtype)
    gen = torch.Generator().manual_seed(3)
    return {n: (torch.randn(shape, generator=gen) if length else torch.zeros(shape))
            .to(dtype=dtype, device=ids.device) for n in plan.past_names}  # fmt: skip


def _causal_feeds(plan: GenerationPlan, ids: torch.Tensor, mask: torch.Tensor,
                  past: Feeds, positions: torch.Tensor | None = None) -> Feeds:  # fmt: skip
    feeds = {"input_ids": ids, "attention_mask": mask}
    if plan.uses_position_ids:
        if positions is None:
            positions = torch.from_numpy(positions_of(mask.cpu().numpy())).to(ids.device)
        feeds["position_ids"] = positions
    return {**feeds, **past}


def _next_step(plan: GenerationPlan, graph: Graph, feeds: Feeds) -> Feeds:
    """The inputs of the step after ``feeds``: its greedy token, and the past it returned."""
    outputs = dict(zip(graph.job.output_names, _live(graph, feeds)))
    token = outputs["logits"][:, -1].argmax(-1, keepdim=True)
    past = {p: outputs[n] for p, n in zip(plan.past_names, plan.present_names)}
    if plan.family == SEQ2SEQ:
        return {**feeds, "input_ids": token, **past}
    mask = feeds["attention_mask"]
    mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    positions = feeds.get("position_ids")
    positions = None if positions is None else positions[:, -1:] + 1
    return _causal_feeds(plan, token, mask, past, positions)


def _random_causal(plan: GenerationPlan, ids: torch.Tensor) -> Feeds:
    gen = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, plan.vocab_size, (ids.shape[0], 3), generator=gen).to(ids.device)
    mask = torch.ones(ids.shape[0], 8, dtype=torch.long, device=ids.device)
    positions = torch.arange(5, 8, device=ids.device).expand(ids.shape[0], 3).contiguous()
    return _causal_feeds(plan, tokens, mask, _empty_past(plan, ids, 5), positions)


def _random_seq2seq(plan: GenerationPlan, states: torch.Tensor, mask: torch.Tensor) -> Feeds:
    gen = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, plan.vocab_size, (states.shape[0], 1), generator=gen)
    return {"input_ids": tokens.to(states.device), "encoder_attention_mask": mask,
            "encoder_hidden_states": states, **_empty_past(plan, mask, 5)}  # fmt: skip


def left_padded(
    plan: GenerationPlan, ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of 2 from the prompt's first row: the row itself, and the row with its first
    third (at least one token) replaced by left padding."""
    row, row_mask = ids[:1], mask[:1]
    pad = max(1, ids.shape[1] // 3)
    short, short_mask = row.clone(), row_mask.clone()
    short[:, :pad] = plan.pad_token_id
    short_mask[:, :pad] = 0
    return torch.cat([row, short]), torch.cat([row_mask, short_mask])


def _greedy_prompts(
    plan: GenerationPlan, prompt: tuple[torch.Tensor, torch.Tensor]
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    ids, mask = prompt
    return [("prompt", ids, mask), ("left-padded batch of 2", *left_padded(plan, ids, mask))]


def _greedy(generator: OnnxGreedy, ids: torch.Tensor, mask: torch.Tensor, steps: int,
            name: str) -> Greedy:  # fmt: skip
    try:
        return generator.greedy(ids.cpu().numpy(), mask.cpu().numpy(), steps)
    except ModelSaveError:
        raise
    except Exception as err:  # ORT
        raise ExportError(
            f"The staged artifact failed in the greedy loop on {name!r}: {type(err).__name__}: "
            f"{err}."
        ) from err


def _compare_runs(name: str, mask: torch.Tensor, live: Greedy, got: Greedy, atol: float,
                  rtol: float) -> tuple[GreedyRun, ProbeResult]:  # fmt: skip
    """The run (tokens side by side) and its step logits as a probe of the report."""
    steps = live.tokens.shape[1]
    same = (live.tokens == got.tokens).all(axis=0)
    first = None if same.all() else int(np.argmin(same))  # 0-based step of the first difference
    compared = steps if first is None else first + 1
    outputs = [compare_output(f"logits, step {s + 1}", live.logits[s], got.logits[s], atol, rtol)
               for s in range(compared)]  # fmt: skip
    logits_ok = all(o.passed for o in outputs)
    run = GreedyRun(
        name=name,
        prompt_lengths=[int(n) for n in mask.sum(dim=1).tolist()],
        live_tokens=live.tokens.tolist(),
        artifact_tokens=got.tokens.tolist(),
        steps_compared=compared,
        passed=first is None and logits_ok,
        first_difference=None if first is None else first + 1,
        near_tie=first is not None and _near_tie(live.logits[first], atol, rtol),
    )
    return run, ProbeResult(f"greedy: {name}", logits_ok, outputs)


def _near_tie(logits: np.ndarray, atol: float, rtol: float) -> bool:
    """Whether, in some row, the two largest logits are closer than the tolerance."""
    top = np.sort(logits.astype(np.float64), axis=-1)[:, -2:]
    return bool((top[:, 1] - top[:, 0] <= atol + rtol * np.abs(top[:, 1])).any())


def _run_note(run: GreedyRun, steps: int) -> str:
    if run.first_difference is None:
        return (
            f"greedy run {run.name!r}: the tokens agree for {steps} steps but the step logits "
            "are outside the tolerances (see its rows in the table)."
        )
    tie = (
        " At that step the live model's two best tokens were within the tolerances of each "
        "other (a near tie): rounding alone can pick the other one."
        if run.near_tie
        else " The logits of that step differ by more than rounding: the artifact's past is "
        "not the live model's cache."
    )
    return (
        f"greedy run {run.name!r}: the artifact's token differs from generate()'s at step "
        f"{run.first_difference} of {steps}; later steps are not compared.{tie}"
    )
