"""Keyword inputs for exporters that only take positional ones (TorchScript's tracer).

TorchScript's ONNX exporter takes keyword inputs as a trailing dict and binds it to ``forward``'s
signature, filling every parameter in between with its default: transformers models then get
``use_cache`` twice (BERT: "got multiple values for argument 'use_cache'") or an int parameter
turned into a graph input (GPT-2's ``logits_to_keep``, which ONNX Runtime then asks for).
``PositionalCall`` passes exactly the example's tensors, by name, and nothing else.
"""

from __future__ import annotations

from typing import Any

import torch

from ..inputs import ExampleInputs


class PositionalCall(torch.nn.Module):
    """``forward(*tensors)`` calls ``model`` with the example's positional and keyword inputs."""

    def __init__(self, model: torch.nn.Module, example: ExampleInputs) -> None:
        super().__init__()
        self.model = model
        self.n_args = len(example.args)
        self.keys = list(example.kwargs)
        self.training = model.training  # this flag only: the exporter restores it afterwards

    def forward(self, *tensors: torch.Tensor) -> Any:
        keywords = dict(zip(self.keys, tensors[self.n_args :]))
        return self.model(*tensors[: self.n_args], **keywords)


def positional(model: torch.nn.Module, example: ExampleInputs) -> tuple[torch.nn.Module, tuple]:
    """The module and positional arguments to trace: ``model`` itself without keyword inputs."""
    if not example.kwargs:
        return model, example.args
    return PositionalCall(model, example), tuple(example.tensors)
