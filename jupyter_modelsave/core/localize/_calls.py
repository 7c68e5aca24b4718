"""The live side: which module calls a forward pass makes, watched through forward hooks.

A module's *call* is one run of its ``forward`` (a module used twice makes two calls). Calls are
numbered in the order they start (pre-order); ``done`` is the order they finish in, the
"execution order" of outputs: a module finishes after every module it calls. Hooks are removed
when the block ends, and the caller keeps the model in ``model_state.preserved`` as well.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..hf import outputs_as_dict


@dataclass
class Call:
    """One module call: who, which of its calls, its caller, and its tensors' shapes."""

    position: int  # in start order
    module: str  # qualified name ("" for the model)
    class_name: str
    index: int  # the module's n-th call (0: first)
    parent: int | None  # position of the caller (the innermost module running)
    inputs: list[tuple[int, ...]] = field(default_factory=list)
    outputs: list[tuple[int, ...]] = field(default_factory=list)
    output_bytes: int = 0
    done: int = -1  # finishing order


def tensors_in(value: Any) -> list[torch.Tensor]:
    """The tensors in a forward's arguments or result (tuples, dicts, ``ModelOutput``s), in order."""
    leaves = torch.utils._pytree.tree_leaves(outputs_as_dict(value))
    return [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]


Hook = Callable[[Call, list[torch.Tensor], tuple, dict], None]


@contextlib.contextmanager
def watched(
    model: torch.nn.Module, on_start: Hook | None = None, on_end: Hook | None = None
) -> Iterator[list[Call]]:
    """Within the block, every forward pass of ``model`` appends its ``Call``s to the yielded list.

    ``on_start(call, inputs, args, kwargs)`` runs before a call's forward, ``on_end(call,
    outputs, args, kwargs)`` after it (``inputs``/``outputs``: the tensors in them). Calls of the model's
    ``ModuleList``/``ModuleDict`` containers never happen (they have no forward).
    """
    calls: list[Call] = []
    stack: list[Call] = []
    counts: dict[str, int] = {}
    finished = [0]
    handles = []

    def pre(name: str, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        inputs = tensors_in((args, kwargs))
        call = Call(len(calls), name, type(module).__name__, counts.get(name, 0),
                    stack[-1].position if stack else None, [tuple(t.shape) for t in inputs])  # fmt: skip
        counts[name] = call.index + 1
        calls.append(call)
        stack.append(call)
        if on_start is not None:
            on_start(call, inputs, args, kwargs)

    def post(name: str, module: torch.nn.Module, args: tuple, kwargs: dict, result: Any) -> None:
        if not stack or stack[-1].module != name:
            return  # a forward that raised inside left the stack: nothing to pair
        call = stack.pop()
        outputs = tensors_in(result)
        call.outputs = [tuple(t.shape) for t in outputs]
        call.output_bytes = sum(t.numel() * t.element_size() for t in outputs)
        call.done, finished[0] = finished[0], finished[0] + 1
        if on_end is not None:
            on_end(call, outputs, args, kwargs)

    try:
        for name, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(
                lambda m, a, k, name=name: pre(name, m, a, k), with_kwargs=True))  # fmt: skip
            handles.append(module.register_forward_hook(
                lambda m, a, k, r, name=name: post(name, m, a, k, r), with_kwargs=True))  # fmt: skip
        yield calls
    finally:
        for handle in handles:
            handle.remove()
