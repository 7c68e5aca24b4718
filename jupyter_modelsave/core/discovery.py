"""Finding the models bound in a namespace, and remembering the inputs of their last forward call.

``find_models`` is cheap enough to run after every notebook cell: it reads only tensor metadata
(no ``repr``, no tensor copies, no CUDA synchronisation) and imports no framework: PyTorch
modules, Keras models and ``tf.Module``s are looked for only when the process has already
imported torch, keras or tensorflow.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
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
    framework: str = "torch"  # "torch", "keras" or "tensorflow" (a tf.Module)
    formats: list[str] = field(default_factory=list)  # the format names that apply
    sharding: str | None = None  # "sharded over N ranks" when the weights are DTensors
    # generation=True applies (a transformers language model; issue 18, core/generation)
    can_generate: bool = False

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
    """List the models bound to names in ``namespace``: ``torch.nn.Module``s, Keras models and
    ``tf.Module``s (each ``ModelInfo`` says its ``framework`` and the ``formats`` that apply).

    The default namespace is IPython's user namespace inside a kernel, else the caller's globals.
    Underscore names are skipped, and so are modules reachable as submodules of another listed
    model (``net.encoder`` is not listed beside ``net``); an object bound to two names is listed
    under the first (a Keras model on the torch backend, also an ``nn.Module``, once, as Keras).
    Found PyTorch models are watched (see ``watch``) unless ``watch_found=False``.
    """
    if namespace is None:
        namespace = _default_namespace()
    if not any(m in sys.modules for m in ("torch", "keras", "tensorflow")):
        return []  # no framework imported, so no model can exist: never import one just to look
    from .keras._tf import framework_of

    candidates: dict[int, tuple[str, Any, str]] = {}
    for name, value in list(namespace.items()):
        if name.startswith("_") or id(value) in candidates or isinstance(value, type):
            continue
        framework = framework_of(value)
        if framework is not None:
            candidates[id(value)] = (name, value, framework)
    nested = {id(sub) for _, model, fw in candidates.values() for sub in _submodels(model, fw)}
    found = [(n, m, fw) for key, (n, m, fw) in candidates.items() if key not in nested]
    if watch_found:
        for _, model, framework in found:
            if framework == "torch":
                watch(model)
    return [
        describe(name, model) if fw == "torch" else describe_keras(name, model, fw)
        for name, model, fw in found
    ]  # framework_of already chose; model_info would ask again


def _submodels(model: Any, framework: str) -> list[Any]:
    """The models nested in ``model`` (its submodules or layers), not ``model`` itself."""
    if framework == "torch":
        return [sub for sub in model.modules() if sub is not model]
    if framework == "tensorflow":
        return list(model.submodules)
    found: list[Any] = []
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        found.append(layer)
        stack += list(getattr(layer, "layers", []))
    torch = sys.modules.get("torch")  # Keras on the torch backend: layers hold nn.Modules too
    if torch is not None and isinstance(model, torch.nn.Module):
        found += [sub for sub in model.modules() if sub is not model]
    return found


def describe(name: str, model: torch.nn.Module) -> ModelInfo:
    """A ``ModelInfo`` from tensor metadata only (no data read, no device sync).

    A sharded model's DTensors count with their full sizes (``DTensor.numel``).
    """
    from .distributed import sharding_note

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
        framework="torch",
        formats=_formats("torch"),
        sharding=sharding_note(tensors),
        can_generate=_can_generate(model),
    )


def model_info(name: str, model: Any) -> ModelInfo:
    """``describe`` for a model of any framework (``NotAModelError`` for anything else)."""
    from .keras._tf import framework_of

    framework = framework_of(model)
    if framework is None:
        raise NotAModelError(
            f"{type(model).__name__} is not a model: expected a torch.nn.Module, a keras.Model "
            "or a tf.Module."
        )
    return describe(name, model) if framework == "torch" else describe_keras(name, model, framework)


def describe_keras(name: str, model: Any, framework: str) -> ModelInfo:
    """A ``ModelInfo`` of a Keras model or ``tf.Module`` from its variables' metadata only.

    ``last_input`` is the example jms would use without one: a functional model's declared
    inputs with ``None`` dimensions as 2 (Keras has no forward hooks to record calls with).
    """
    from .keras._tf import TF_ONLY_FORMATS, keras_backend
    from .keras.parity import device_of

    variables = list(getattr(model, "weights", None) or getattr(model, "variables", []))
    sizes = [(_count(v.shape), _dtype_name(v.dtype)) for v in variables]
    float_dtypes = sorted({d for _, d in sizes if d.startswith(("float", "bfloat"))})
    names = _formats(framework)
    if framework == "keras" and keras_backend() not in (None, "tensorflow"):
        names = [n for n in names if n not in TF_ONLY_FORMATS]
    return ModelInfo(
        name=name,
        class_name=type(model).__name__,
        num_params=sum(n for n, _ in sizes),
        size_bytes=sum(n * _itemsize(d) for n, d in sizes),
        device=device_of(model),
        dtype=",".join(float_dtypes) or "none",
        training=False,  # Keras has no global mode: jms calls it with training=False
        last_input=_declared_specs(model) if framework == "keras" else None,
        framework=framework,
        formats=names,
    )


def _can_generate(model: Any) -> bool:
    from .generation import can_generate

    return can_generate(model)


def _formats(framework: str) -> list[str]:
    from .formats import formats

    return formats(framework)


def _count(shape: Any) -> int:
    total = 1
    for size in tuple(shape):
        total *= int(size or 0)
    return total


def _dtype_name(dtype: Any) -> str:
    return str(getattr(dtype, "name", dtype)).removeprefix("torch.")


def _itemsize(dtype: str) -> int:
    import numpy as np

    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        return 2 if "16" in dtype else 4


def _declared_specs(model: Any) -> list[TensorSpec] | None:
    from .inputs import TensorSpec
    from .keras.job import DEFAULT_BATCH, declared_input_names

    try:
        inputs = list(model.inputs or [])
    except (AttributeError, ValueError):
        return None
    names = declared_input_names(model)
    if not inputs or len(names) not in (0, len(inputs)):
        return None
    if not names:
        names = ["input"] if len(inputs) == 1 else [f"input_{i}" for i in range(len(inputs))]
    return [
        TensorSpec(n, tuple(DEFAULT_BATCH if s is None else int(s) for s in t.shape),
                   _dtype_name(getattr(t, "dtype", "float32")), "cpu")
        for n, t in zip(names, inputs)
    ]  # fmt: skip


def _default_namespace() -> dict[str, Any]:
    ipython_module = sys.modules.get("IPython")
    shell = ipython_module.get_ipython() if ipython_module is not None else None
    if shell is not None:
        return shell.user_ns
    return sys._getframe(2).f_globals
