"""Greedy generation: with the artifact's ONNX Runtime sessions, and with the live model.

``OnnxGreedy`` is the loop a user writes (the README shows it by hand): a prefill with an empty
past, then one token at a time through ``present`` -> ``past_key_values``. ``live_greedy`` is the
reference: the live model's own ``generate(do_sample=False)`` with its raw logits per step.
Both run a fixed number of steps: an end-of-sequence token does not stop them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import _ort
from .plan import SEQ2SEQ, GenerationPlan

_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64}


@dataclass
class Greedy:
    """The new tokens ``[batch, steps]`` and the logits of each step (``[batch, vocab]``)."""

    tokens: np.ndarray
    logits: list[np.ndarray]


def positions_of(attention_mask: np.ndarray) -> np.ndarray:
    """Position ids as ``generate`` makes them: the count of real tokens before each one (pads
    get 0; their position is masked out anyway)."""
    return np.maximum(np.cumsum(attention_mask, axis=-1) - 1, 0).astype(np.int64)


class OnnxGreedy:
    """Greedy generation with a generation artifact's sessions (``decoder``; ``encoder`` for
    seq2seq), as ``plan`` describes them."""

    def __init__(self, plan: GenerationPlan, decoder: Any, encoder: Any = None) -> None:
        self.plan = plan
        self.decoder = decoder
        self.encoder = encoder
        self.kv_dtype = _NUMPY_DTYPES.get(plan.kv_dtype)
        if self.kv_dtype is None:
            raise ValueError(f"no numpy dtype for a {plan.kv_dtype} cache")

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        shape = (batch, self.plan.kv_heads, 0, self.plan.head_dim)
        return {name: np.zeros(shape, self.kv_dtype) for name in self.plan.past_names}

    def run_decoder(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _ort.run_named(self.decoder, feeds)

    def greedy(self, input_ids: np.ndarray, attention_mask: np.ndarray, steps: int) -> Greedy:
        """``steps`` new tokens for the prompt (``[batch, length]``, left-padded batches
        welcome)."""
        input_ids = np.asarray(input_ids, dtype=np.int64)
        mask = np.asarray(attention_mask, dtype=np.int64)
        if self.plan.family == SEQ2SEQ:
            return self._seq2seq(input_ids, mask, steps)
        return self._causal(input_ids, mask, steps)

    def _causal(self, input_ids: np.ndarray, mask: np.ndarray, steps: int) -> Greedy:
        batch = input_ids.shape[0]
        positions = positions_of(mask)
        feeds = {"input_ids": input_ids, "attention_mask": mask, **self.empty_past(batch)}
        tokens, logits = [], []
        for _ in range(steps):
            if self.plan.uses_position_ids:
                feeds["position_ids"] = positions
            out = self.run_decoder(feeds)
            step_logits = out["logits"][:, -1]
            token = step_logits.argmax(-1)
            tokens.append(token)
            logits.append(step_logits)
            mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
            positions = positions[:, -1:] + 1
            feeds = {"input_ids": token[:, None].astype(np.int64), "attention_mask": mask}
            feeds.update(zip(self.plan.past_names, (out[n] for n in self.plan.present_names)))
        return Greedy(np.stack(tokens, axis=1), logits)

    def _seq2seq(self, input_ids: np.ndarray, mask: np.ndarray, steps: int) -> Greedy:
        batch = input_ids.shape[0]
        (states,) = self.encoder.run(
            ["last_hidden_state"], {"input_ids": input_ids, "attention_mask": mask}
        )
        start = self.plan.decoder_start_token_id
        token = np.full((batch,), start, np.int64)
        past = self.empty_past(batch)
        tokens, logits = [], []
        for _ in range(steps):
            out = self.run_decoder({"input_ids": token[:, None], "encoder_attention_mask": mask,
                                    "encoder_hidden_states": states, **past})  # fmt: skip
            step_logits = out["logits"][:, -1]
            token = step_logits.argmax(-1).astype(np.int64)
            tokens.append(token)
            logits.append(step_logits)
            past = {p: out[n] for p, n in zip(self.plan.past_names, self.plan.present_names)}
        return Greedy(np.stack(tokens, axis=1), logits)


def live_greedy(model: torch.nn.Module, plan: GenerationPlan, input_ids: torch.Tensor,
                attention_mask: torch.Tensor, steps: int) -> Greedy:  # fmt: skip
    """The live model's ``generate(do_sample=False)``: ``steps`` new tokens and its raw logits.

    Only greedy decoding runs: the model's own generation settings (repetition penalties,
    forced tokens, an end-of-sequence stop) are set aside for the call (``model.generation_config``
    is swapped for one holding only the special token ids, and put back afterwards).
    """
    from transformers import GenerationConfig

    ids = {"pad_token_id": plan.pad_token_id, "eos_token_id": None}
    if plan.decoder_start_token_id is not None:
        ids["decoder_start_token_id"] = plan.decoder_start_token_id
    config = GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=steps, use_cache=True,
        output_logits=True, return_dict_in_generate=True, **ids,
    )  # fmt: skip
    with _only_greedy(model, GenerationConfig(**ids)), torch.no_grad():
        out = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=config
        )
    tokens = out.sequences[:, -steps:].cpu().numpy()
    return Greedy(tokens, [step.float().cpu().numpy() for step in out.logits])


@contextlib.contextmanager
def _only_greedy(model: torch.nn.Module, config: Any) -> Iterator[None]:
    saved = model.generation_config
    model.generation_config = config
    try:
        yield
    finally:
        model.generation_config = saved
