"""The modules that are exported: the live model behind flat, named tensor inputs and outputs.

Each wrapper's ``forward`` takes one tensor per graph input, in the graph's order, under a
Python name (``past_key_values.0.key`` becomes the parameter ``past_key_values_0_key``: the
exporters bind dynamic shapes by parameter name), builds the cache object the model expects,
calls the model with ``use_cache=True`` and returns plain tensors in the graph's output order.
The model is a submodule, not a copy: nothing of it is changed.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from . import _cache
from .plan import GenerationPlan


def parameter_name(graph_name: str) -> str:
    """The Python parameter name of a graph input (``past_key_values.0.key`` ->
    ``past_key_values_0_key``)."""
    return graph_name.replace(".", "_")


class _FlatModule(torch.nn.Module):
    """A module whose ``forward(*tensors)`` is signed with the graph's input names."""

    input_names: list[str]

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # one subclass per instance: the signature (one parameter per input) differs per model
        return super().__new__(type(cls.__name__, (cls,), {}))

    def _sign(self, input_names: list[str]) -> None:
        self.input_names = input_names
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [inspect.Parameter("self", kind)]
        params += [inspect.Parameter(parameter_name(n), kind) for n in input_names]
        base = type(self).__mro__[1].forward

        def forward(self: Any, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return base(self, *tensors)

        forward.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        type(self).forward = forward  # type: ignore[method-assign]

    def _named(self, tensors: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        return dict(zip(self.input_names, tensors))


def _pairs(inputs: dict[str, torch.Tensor], names: list[str]) -> _cache.Pairs:
    return [(inputs[names[i]], inputs[names[i + 1]]) for i in range(0, len(names), 2)]


class _WithPast(_FlatModule):
    """A decoder step of the model: the graph's ``plan.decoder_inputs`` in, logits and the
    present key/values out."""

    def __init__(self, model: torch.nn.Module, plan: GenerationPlan) -> None:
        super().__init__()
        self.model = model
        self.plan = plan
        self.training = model.training
        self._sign(plan.decoder_inputs)

    def _logits_and_present(self, output: Any) -> tuple[torch.Tensor, ...]:
        present = _cache.self_attention_layers(_cache.returned_cache(output, self.plan.cache_arg))
        return (output.logits, *(t for pair in present for t in pair))


class CausalLMWithPast(_WithPast):
    """``(input_ids, attention_mask, [position_ids], past...) -> (logits, present...)``."""

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs = self._named(tensors)
        kwargs: dict[str, Any] = {
            "input_ids": inputs["input_ids"],
            "attention_mask": inputs["attention_mask"],
            self.plan.cache_arg: _cache.dynamic_cache(_pairs(inputs, self.plan.past_names)),
        }
        if self.plan.uses_position_ids:
            kwargs["position_ids"] = inputs["position_ids"]
        return self._logits_and_present(self.model(**kwargs, use_cache=True, return_dict=True))


class Seq2SeqEncoder(_FlatModule):
    """``(input_ids, attention_mask) -> last_hidden_state``: the model's encoder."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = model.get_encoder()
        self.training = model.training
        self._sign(["input_ids", "attention_mask"])

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        inputs = self._named(tensors)
        output = self.encoder(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], return_dict=True
        )
        return output.last_hidden_state


class Seq2SeqDecoderWithPast(_WithPast):
    """``(input_ids, encoder_attention_mask, encoder_hidden_states, past...) -> (logits,
    present...)``: one decoder step through the self-attention past.

    The cross-attention keys/values are computed from ``encoder_hidden_states`` at every step
    (the cross-attention cache handed to the model is empty), so one graph serves the first
    step and every later one without a branch.
    """

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs = self._named(tensors)
        cache = _cache.encoder_decoder_cache(_pairs(inputs, self.plan.past_names))
        output = self.model(
            decoder_input_ids=inputs["input_ids"],
            attention_mask=inputs["encoder_attention_mask"],
            encoder_outputs=(inputs["encoder_hidden_states"],),
            use_cache=True,
            return_dict=True,
            **{self.plan.cache_arg: cache},
        )
        return self._logits_and_present(output)
