"""Finding the models bound in a namespace, and remembering the inputs of their last forward call.

``find_models`` is cheap enough to run after every notebook cell: it reads only tensor metadata
(no ``repr``, no tensor copies, no CUDA synchronisation) and does not import torch when the
namespace's process has not imported it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import NotAModelError

if TYPE_CHECKING:
    import torch

    from .inputs import ExampleInputs, TensorSpec


@dataclass(frozen=True)
class ModelInfo:
    """What a model picker shows about one model. Sizes count parameters and buffers."""

    name: str
    class_name: str
    num_params: int
    size_bytes: int
    device: str
    dtype: str
    training: bool
    last_input: list[TensorSpec] | None

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["last_input"] = (
            None if self.last_input is None else [s.to_dict() for s in self.last_input]
        )
        return data


# model -> inputs of its last forward call; weak keys, so watching never keeps a model alive
_LAST_INPUTS: weakref.WeakKeyDictionary[Any, ExampleInputs] = weakref.WeakKeyDictionary()
_HOOKS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


_PAUSED = threading.local()


@contextlib.contextmanager
def recording_paused() -> Iterator[None]:
    """Within the block (in this thread), forward calls are not recorded as "last inputs".

    ``stage`` runs the model on its parity probes and exporters trace it: those are not the
    user's calls, so they must not replace the inputs jms later offers as the default.
    """
    depth = getattr(_PAUSED, "depth", 0)
    _PAUSED.depth = depth + 1
    try:
        yield
    finally:
        _PAUSED.depth = depth


def _record_last_input(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook: keep one detached copy of this call's tensors (replacing the previous)."""
    if getattr(_PAUSED, "depth", 0):
        return
    import torch

    from .inputs import ExampleInputs, input_names_for

    tensor_kwargs = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
    if not all(isinstance(a, torch.Tensor) for a in args) or not (args or tensor_kwargs):
        return
    with torch.no_grad():
        copies = [t.detach().clone() for t in (*args, *tensor_kwargs.values())]
    names = input_names_for(module, len(args), list(tensor_kwargs))
    _LAST_INPUTS[module] = ExampleInputs(
        tuple(copies[: len(args)]), dict(zip(tensor_kwargs, copies[len(args) :])), names
    )


def watch(model: Any) -> None:
    """Record the inputs of ``model``'s future forward calls (only the last call is kept)."""
    import torch

    if not isinstance(model, torch.nn.Module):
        raise NotAModelError(f"jms.watch needs a torch.nn.Module, got {type(model).__name__}.")
    if model not in _HOOKS:
        _HOOKS[model] = model.register_forward_pre_hook(_record_last_input, with_kwargs=True)


def unwatch(model: Any) -> None:
    """Remove the hook ``watch`` added and forget the recorded inputs."""
    handle = _HOOKS.pop(model, None)
    if handle is not None:
        handle.remove()
    _LAST_INPUTS.pop(model, None)


def last_inputs(model: Any) -> ExampleInputs | None:
    """The inputs of the last forward call seen by ``watch``, or None."""
    return _LAST_INPUTS.get(model)


def find_models(
    namespace: dict[str, Any] | None = None, *, watch_found: bool = True
) -> list[ModelInfo]:
    """List the ``torch.nn.Module`` objects bound to names in ``namespace``.

    The default namespace is IPython's user namespace inside a kernel, else the caller's globals.
    Underscore names are skipped, and so are modules reachable as submodules of another listed
    model (``net.encoder`` is not listed beside ``net``); an object bound to two names is listed
    under the first. Found models are watched (see ``watch``) unless ``watch_found=False``.
    """
    if namespace is None:
        namespace = _default_namespace()
    torch = sys.modules.get("torch")
    if torch is None:  # no torch imported, so no model can exist: never import it just to look
        return []
    Module = torch.nn.Module
    candidates: dict[int, tuple[str, Any]] = {}
    for name, value in list(namespace.items()):
        if not name.startswith("_") and isinstance(value, Module) and id(value) not in candidates:
            candidates[id(value)] = (name, value)
    nested = {
        id(sub) for _, model in candidates.values() for sub in model.modules() if sub is not model
    }
    found = [(n, m) for key, (n, m) in candidates.items() if key not in nested]
    if watch_found:
        for _, model in found:
            watch(model)
    return [describe(name, model) for name, model in found]


def describe(name: str, model: torch.nn.Module) -> ModelInfo:
    """A ``ModelInfo`` from tensor metadata only (no data read, no device sync)."""
    tensors = [*model.parameters(), *model.buffers()]
    params = list(model.parameters())
    devices = sorted({str(t.device) for t in tensors}) or ["cpu"]
    float_dtypes = sorted(
        {str(t.dtype).removeprefix("torch.") for t in params if t.is_floating_point()}
    )
    last = last_inputs(model)
    return ModelInfo(
        name=name,
        class_name=type(model).__name__,
        num_params=sum(p.numel() for p in params),
        size_bytes=sum(t.numel() * t.element_size() for t in tensors),
        device=",".join(devices),
        dtype=",".join(float_dtypes) or "none",
        training=model.training,
        last_input=None if last is None else last.specs,
    )


def _default_namespace() -> dict[str, Any]:
    ipython_module = sys.modules.get("IPython")
    shell = ipython_module.get_ipython() if ipython_module is not None else None
    if shell is not None:
        return shell.user_ns
    return sys._getframe(2).f_globals
