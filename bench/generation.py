"""Figure: what the past buys. Greedy tokens per second for 64 new tokens on the CPU.

A GPT-2 from a small config (4 layers, hidden 256, vocabulary 1000; random init, no hub), batch 1,
prompts of 16, 64 and 256 tokens. Three sides, alternated, median of ``JMS_BENCH_ROUNDS`` (3):

- **with past**: the ``jms.stage(model, prompt, generation=True)`` artifact in ONNX Runtime,
  the README's loop (a prefill with an empty past, then one token per step through the past);
- **without past**: a single-forward ``jms.stage`` export (dynamic batch and sequence; the
  cache is off) run on the whole sequence at every step (full recompute);
- **live**: the live model's ``generate(do_sample=False)`` (with its own cache).

All three must produce the same tokens (checked). The ratio with past / without past must grow
with the prompt's length; the last line prints it at the longest prompt. Every side runs on
``JMS_BENCH_THREADS`` (1) threads (torch and ONNX Runtime), so that the machine's other load
moves the figures less.
"""

from __future__ import annotations

import functools
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jupyter_modelsave as jms
from jupyter_modelsave.core.generation.loop import live_greedy
from jupyter_modelsave.core.generation.plan import make_plan

LENGTHS = (16, 64, 256)
NEW_TOKENS = 64
ROUNDS = int(os.environ.get("JMS_BENCH_ROUNDS", "3"))
THREADS = int(os.environ.get("JMS_BENCH_THREADS", "1"))


def session(path: Path):
    """An ONNX Runtime session of a written artifact on ``THREADS`` threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = THREADS
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def build() -> torch.nn.Module:
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=1000, n_embd=256, n_layer=4, n_head=4,
                                     n_positions=512, bos_token_id=0, eos_token_id=0)  # fmt: skip
    return transformers.GPT2LMHeadModel(config).eval()


def with_past(graph, ids: np.ndarray, steps: int) -> np.ndarray:
    """The README's loop: an empty past, then one token per step through the past."""
    inputs = {i.name: i for i in graph.get_inputs()}
    outputs = [o.name for o in graph.get_outputs()]
    mask = np.ones_like(ids)
    feeds = {"input_ids": ids, "attention_mask": mask,
             "position_ids": np.maximum(mask.cumsum(-1) - 1, 0)}  # fmt: skip
    for name, i in inputs.items():
        if name.startswith("past_key_values."):
            feeds[name] = np.zeros((len(ids), i.shape[1], 0, i.shape[3]), np.float32)
    tokens = []
    for _ in range(steps):
        out = dict(zip(outputs, graph.run(None, feeds)))
        token = out["logits"][:, -1].argmax(-1)
        tokens.append(token)
        mask = np.concatenate([mask, np.ones((len(ids), 1), mask.dtype)], axis=1)
        feeds = {"input_ids": token[:, None], "attention_mask": mask,
                 "position_ids": feeds["position_ids"][:, -1:] + 1,
                 **{n.replace("present.", "past_key_values."): out[n] for n in outputs[1:]}}  # fmt: skip
    return np.stack(tokens, axis=1)


def without_past(graph, ids: np.ndarray, steps: int) -> np.ndarray:
    """Full recompute: the whole sequence through the single-forward graph at every step."""
    sequence = ids
    for _ in range(steps):
        logits = graph.run(["logits"], {"input_ids": sequence,
                                          "attention_mask": np.ones_like(sequence)})[0]  # fmt: skip
        sequence = np.concatenate([sequence, logits[:, -1].argmax(-1)[:, None]], axis=1)
    return sequence[:, ids.shape[1] :]


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    tokens = fn()
    return time.perf_counter() - start, tokens


def main() -> None:
    torch.set_num_threads(THREADS)
    model = build()
    gen = torch.Generator().manual_seed(1)
    prompts = {n: torch.randint(1, 1000, (1, n), generator=gen) for n in LENGTHS}
    with tempfile.TemporaryDirectory() as folder:
        short = prompts[LENGTHS[0]]
        cached = session(jms.export(model, folder, short, generation=True, name="past"))
        axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
        example = {"input_ids": short, "attention_mask": torch.ones_like(short)}
        full = session(jms.export(model, folder, example, dynamic_axes=axes, name="full"))
        plan = make_plan_for(model, short)
        ratios = []
        for length, prompt in prompts.items():
            ids, mask = prompt.numpy(), torch.ones_like(prompt)
            sides = {
                "with past": functools.partial(with_past, cached, ids, NEW_TOKENS),
                "without past": functools.partial(without_past, full, ids, NEW_TOKENS),
                "live generate()": functools.partial(live, model, plan, prompt, mask),
            }
            for side in sides.values():  # warm-up
                side()
            times: dict[str, list[float]] = {name: [] for name in sides}
            tokens: dict[str, np.ndarray] = {}
            for _ in range(ROUNDS):
                for name, side in sides.items():
                    seconds, tokens[name] = timed(side)
                    times[name].append(seconds)
            rate = {name: NEW_TOKENS / statistics.median(t) for name, t in times.items()}
            same = all(np.array_equal(tokens["with past"], t) for t in tokens.values())
            ratio = rate["with past"] / rate["without past"]
            ratios.append(ratio)
            print(
                f"prompt {length:>3}: with past {rate['with past']:7.1f} tok/s, without past "
                f"{rate['without past']:7.1f} tok/s, live generate() "
                f"{rate['live generate()']:7.1f} tok/s; with/without past {ratio:.2f}x, "
                f"with past/live {rate['with past'] / rate['live generate()']:.2f}x; "
                f"same tokens: {same}",
                flush=True,
            )
    growing = all(a < b for a, b in itertools.pairwise(ratios))
    print(f"with/without past grows with the prompt: {growing}; "
          f"at {LENGTHS[-1]} tokens: ratio {ratios[-1]:.2f}")  # fmt: skip


def live(model: torch.nn.Module, plan, prompt: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """The live model's generate(do_sample=False) tokens."""
    return live_greedy(model, plan, prompt, mask, NEW_TOKENS).tokens


def make_plan_for(model: torch.nn.Module, prompt: torch.Tensor):
    """The cache layout live_greedy needs (one trial forward pass)."""
    with torch.no_grad():
        return make_plan(model, "causal_lm", prompt, torch.ones_like(prompt))


if __name__ == "__main__":
    main()
