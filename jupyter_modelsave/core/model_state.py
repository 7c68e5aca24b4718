"""Keeping the live model exactly as it was while it is exported."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

# the hook dicts nn.Module keeps; exporters and tracing must not leave anything behind in them
_HOOK_ATTRS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)
# gradient-only hooks: they never change a forward result, and torch.jit.trace refuses modules
# that have them, so exporters run without them
_BACKWARD_HOOK_ATTRS = ("_backward_hooks", "_backward_pre_hooks")


@contextlib.contextmanager
def preserved(model: torch.nn.Module, *, hide_backward_hooks: bool = False) -> Iterator[None]:
    """Put ``model`` in eval mode for the block, then restore every submodule's training flag,
    every parameter's ``requires_grad`` and every hook dict, also when the block raises.

    ``hide_backward_hooks``: also empty the backward hook dicts for the block (for exporters).
    """
    modules = list(model.modules())
    training = [m.training for m in modules]
    hooks = [{a: dict(getattr(m, a)) for a in _HOOK_ATTRS if hasattr(m, a)} for m in modules]
    params = list(model.parameters())
    grads = [p.requires_grad for p in params]
    try:
        model.eval()
        if hide_backward_hooks:
            for module in modules:
                for attr in _BACKWARD_HOOK_ATTRS:
                    getattr(module, attr, {}).clear()
        yield
    finally:
        for module, flag, saved in zip(modules, training, hooks):
            module.training = flag
            for attr, entries in saved.items():
                current = getattr(module, attr)
                if dict(current) != entries:
                    current.clear()
                    current.update(entries)
        for param, flag in zip(params, grads):
            param.requires_grad_(flag)


@contextlib.contextmanager
def reference_mode() -> Iterator[bool]:
    """no_grad, with TF32 matmuls and convolutions off for a bit-honest reference.

    Yields whether TF32 was on before (so reports can say what a user's own runs would see).
    """
    matmul = torch.backends.cuda.matmul.allow_tf32
    cudnn = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        with torch.no_grad():
            yield matmul or cudnn
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn
