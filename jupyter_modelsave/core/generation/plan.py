"""Which models can be exported for generation, and the shapes of their key/value cache.

``generation_family`` answers without running the model (and without importing
``transformers``); ``make_plan`` runs it once on a short prompt with the cache on and reads the
number of layers, the key/value heads, the head size and the dtype from the cache it returns, so
grouped-query attention and any head layout are taken as the model builds them.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidOptionError
from ..hf import is_transformers_model

CAUSAL_LM = "causal_lm"
SEQ2SEQ = "seq2seq"


def generation_family(model: Any) -> str | None:
    """``"causal_lm"``, ``"seq2seq"``, or None when ``model`` cannot be exported for generation."""
    try:
        return check_family(model)
    except Exception:  # InvalidOptionError, or an odd model whose config or forward raises
        return None


def can_generate(model: Any) -> bool:
    """Whether ``jms.stage(model, generation=True)`` applies (cheap: nothing runs)."""
    return generation_family(model) is not None


def check_family(model: Any) -> str:
    """The model's family, or ``InvalidOptionError`` saying why it cannot be exported for
    generation and what to do instead."""
    cls = type(model).__name__
    pretrained = getattr(sys.modules.get("transformers.modeling_utils"), "PreTrainedModel", None)
    if not is_transformers_model(model) or not isinstance(model, pretrained):
        raise InvalidOptionError(
            f"generation=True exports transformers language models (a ...ForCausalLM, "
            f"GPT2LMHeadModel, T5ForConditionalGeneration, ...); {cls} is not one. Stage it "
            "without generation=True."
        )
    can = getattr(model, "can_generate", None)
    if not callable(can) or not can():
        raise InvalidOptionError(
            f"{cls} cannot generate (model.can_generate() is False: it has no language-model "
            f"head). Stage the model with a head (e.g. {cls.removesuffix('Model')}LMHeadModel or "
            "...ForCausalLM), or stage this one without generation=True."
        )
    if getattr(model, "main_input_name", "input_ids") != "input_ids":
        raise InvalidOptionError(
            f"{cls} generates from {model.main_input_name!r}, not from token ids; "
            "generation=True covers text models whose input is input_ids. Stage it without "
            "generation=True."
        )
    if cache_argument(model) is None:
        raise InvalidOptionError(
            f"{cls}.forward takes no key/value cache (past_key_values), so there is no past to "
            "export. Stage it without generation=True."
        )
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    if encoder_decoder and not callable(getattr(model, "get_encoder", None)):
        raise InvalidOptionError(
            f"{cls} is an encoder-decoder model without get_encoder(); its encoder cannot be "
            "exported on its own. Stage it without generation=True."
        )
    return SEQ2SEQ if encoder_decoder else CAUSAL_LM


def cache_argument(model: Any) -> str | None:
    """The name of ``forward``'s cache parameter: ``cache`` (transformers 5.x) or
    ``past_key_values`` (4.x), None when it has neither."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    return next((n for n in ("cache", "past_key_values") if n in params), None)


def takes_position_ids(model: Any) -> bool:
    return "position_ids" in inspect.signature(model.forward).parameters


@dataclass(frozen=True)
class GenerationPlan:
    """What the with-past graphs look like for one model."""

    family: str
    num_layers: int
    kv_heads: int
    head_dim: int
    kv_dtype: str  # torch dtype name of the cache, e.g. "float32"
    uses_position_ids: bool
    cache_arg: str
    pad_token_id: int
    decoder_start_token_id: int | None  # seq2seq only
    vocab_size: int
    hidden_size: int | None = None  # seq2seq: the width of encoder_hidden_states

    @property
    def past_names(self) -> list[str]:
        part = ".decoder" if self.family == SEQ2SEQ else ""
        return [f"past_key_values.{i}{part}.{kv}" for i in range(self.num_layers)
                for kv in ("key", "value")]  # fmt: skip

    @property
    def present_names(self) -> list[str]:
        return [n.replace("past_key_values.", "present.", 1) for n in self.past_names]

    @property
    def decoder_inputs(self) -> list[str]:
        if self.family == SEQ2SEQ:
            return [
                "input_ids",
                "encoder_attention_mask",
                "encoder_hidden_states",
                *self.past_names,
            ]
        positions = ["position_ids"] if self.uses_position_ids else []
        return ["input_ids", "attention_mask", *positions, *self.past_names]

    @property
    def decoder_outputs(self) -> list[str]:
        return ["logits", *self.present_names]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def make_plan(model: Any, family: str, input_ids: Any, attention_mask: Any) -> GenerationPlan:
    """Run ``model`` once on the prompt with the cache on (no_grad, eval: the caller's
    ``preserved``/``reference_mode``) and read the cache's layout."""
    import torch

    from . import _cache

    cache_arg = cache_argument(model)
    assert cache_arg is not None  # check_family refused models without one
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": True}
    if family == SEQ2SEQ:
        start = start_token(model)
        kwargs["decoder_input_ids"] = input_ids.new_full((input_ids.shape[0], 1), start)
    output = model(**kwargs, return_dict=True)
    cache = _cache.returned_cache(output, cache_arg)
    layers = _cache.self_attention_layers(cache)
    if not layers:
        raise InvalidOptionError(
            f"{type(model).__name__} returned no key/value cache with use_cache=True; there is "
            "no past to export. Stage it without generation=True."
        )
    key = layers[0][0]
    if key.dim() != 4 or any(k.shape != key.shape for pair in layers for k in pair):
        raise InvalidOptionError(
            f"{type(model).__name__}'s cache holds tensors of shapes "
            f"{sorted({tuple(k.shape) for pair in layers for k in pair})}, not one "
            "[batch, heads, sequence, head_dim] per layer (a sliding-window, hybrid or "
            "multi-latent cache); generation=True covers the plain key/value cache."
        )
    if key.dtype not in (torch.float32, torch.float16, torch.float64):
        raise InvalidOptionError(
            f"{type(model).__name__} keeps its cache in {key.dtype}; ONNX Runtime has no numpy "
            "feeds of that type for the loop. Stage a float32 (or float16) copy: "
            "copy.deepcopy(model).float()."
        )
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return GenerationPlan(
        family=family,
        num_layers=len(layers),
        kv_heads=int(key.shape[1]),
        head_dim=int(key.shape[3]),
        kv_dtype=str(key.dtype).removeprefix("torch."),
        uses_position_ids=family == CAUSAL_LM and takes_position_ids(model),
        cache_arg=cache_arg,
        pad_token_id=pad_token(model),
        decoder_start_token_id=start_token(model) if family == SEQ2SEQ else None,
        vocab_size=int(output.logits.shape[-1] if output.logits is not None else text.vocab_size),
        hidden_size=int(output.encoder_last_hidden_state.shape[-1]) if family == SEQ2SEQ else None,
    )


def _generation_value(model: Any, *names: str) -> Any:
    """The first of ``names`` set in the generation config, else the config (a list: its first)."""
    for name in names:
        for source in (getattr(model, "generation_config", None), model.config):
            value = getattr(source, name, None)
            if isinstance(value, (list, tuple)):
                value = value[0] if value else None
            if value is not None:
                return int(value)
    return None


def pad_token(model: Any) -> int:
    """The pad token: the model's, else its eos token, else 0 (masked out either way)."""
    value = _generation_value(model, "pad_token_id", "eos_token_id")
    return 0 if value is None else value


def start_token(model: Any) -> int:
    """The decoder's first token of a seq2seq model, or ``InvalidOptionError``."""
    value = _generation_value(model, "decoder_start_token_id", "bos_token_id")
    if value is None:
        raise InvalidOptionError(
            f"{type(model).__name__} has no decoder_start_token_id (nor bos_token_id) in its "
            "config or generation_config; set model.generation_config.decoder_start_token_id."
        )
    return value
