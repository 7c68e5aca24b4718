"""Finding the models bound in a namespace, and remembering the inputs of their last forward call.

``find_models`` is cheap enough to run after every notebook cell: it reads only tensor metadata
(no ``repr``, no tensor copies, no CUDA synchronisation) and imports no framework: PyTorch
modules, Keras models and ``tf.Module``s are looked for only when the process has already
imported torch, keras or tensorflow.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
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
    # without a recorded call: an example input guessed from the first layer (``example_guess``)
    guessed_input: TensorSpec | None = None
    guessed_expression: str | None = None
    # generation=True applies (a transformers language model; issue 18, core/generation)
    can_generate: bool = False
    # stage(precision=...) makes variants of it (a float32 model of a framework with the release
    # check, on one process; which precisions: the format's ``Capabilities.precisions``)
    variants: bool = False

    def to_dict(self) -> dict[str, Any]:
        last, guess = self.last_input, self.guessed_input
        data = {**self.__dict__, "guessed_input": None if guess is None else guess.to_dict()}
        data["last_input"] = None if last is None else [s.to_dict() for s in last]
        return data


# model -> (positional, keyword) tensors of its last forward call; weak keys, so recording never
# keeps a model alive. Input names are worked out when asked for (``last_inputs``), not per call.
_LAST_INPUTS: weakref.WeakKeyDictionary[Any, tuple[tuple, dict]] = weakref.WeakKeyDictionary()
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


def _record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    """Remember ``module``'s call with these inputs (replacing the previous), unless it is not a
    real call of the user's (also ``watch``'s forward pre-hook).

    Only calls whose positional arguments are all tensors (keyword tensors are kept, other
    keywords ignored) are recorded; calls made by ``stage`` (``recording_paused``) and calls under
    tracing, compiling or exporting (fake, functional or symbolic tensors) never are. The tensors
    are kept by reference (``detach()``: no copy, no autograd graph); see ``_kept``.
    """
    if getattr(_PAUSED, "depth", 0):
        return
    import torch

    tensor_kwargs = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
    if not all(isinstance(a, torch.Tensor) for a in args) or not (args or tensor_kwargs):
        return
    tensors = [*args, *tensor_kwargs.values()]
    if not _real_call(torch, tensors):
        return
    kept = [_kept(torch, t) for t in tensors]
    _LAST_INPUTS[module] = (tuple(kept[: len(args)]), dict(zip(tensor_kwargs, kept[len(args) :])))


def _real_call(torch: Any, tensors: list[torch.Tensor]) -> bool:
    """False under tracing, compiling or exporting, and for tensors without real data.

    ``torch.onnx.export``, ``torch.export.export``, ``torch.compile``, ``torch.jit.trace`` and
    ``torch.fx`` run the model on fake, functional, symbolic or traced tensors: recording those
    would offer shapes like ``s77`` and tensors that hold no values as the next example.
    """
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    if torch.jit.is_tracing() or _fx_tracing(torch):
        return False
    for t in tensors:
        if type(t) not in (torch.Tensor, torch.nn.Parameter) or t.is_meta:
            return False  # FakeTensor, FunctionalTensor, other subclasses; meta: no data
        if torch._is_functional_tensor(t):
            return False
        if any(not isinstance(size, int) for size in t.shape):
            return False  # a SymInt dimension
    return True


def _fx_tracing(torch: Any) -> bool:
    """``torch.fx.symbolic_trace`` in progress (its inputs are proxies, so this is a second guard;
    ``is_fx_tracing`` itself would log a warning)."""
    check = getattr(torch.fx._symbolic_trace, "is_fx_symbolic_tracing", None)
    return bool(check and check())


def _kept(torch: Any, tensor: torch.Tensor) -> torch.Tensor:
    """The tensor to keep for a recorded call: the caller's own (detached), copied only when needed.

    Copied: an inference-mode tensor (it could not be used outside inference mode) and a view of a
    larger storage (keeping the view would keep all of it alive). Otherwise no copy is made, so
    recording costs no time and no memory beyond the last call's inputs staying alive; a tensor
    changed in place after the call shows its new values (parity compares the live model and the
    artifact on the same values either way).
    """
    tensor = tensor.detach()
    if tensor.is_inference():
        with torch.inference_mode(False):
            return tensor.clone()
    if tensor.layout == torch.strided:
        own = tensor.numel() * tensor.element_size()
        if tensor.untyped_storage().nbytes() > 2 * own + 4096:
            return tensor.clone()
    return tensor


# --- the recorder: every module's last top-level call, once a surface is loaded ---

_RECORDER: list[Any] = []  # the two global hooks' handles while recording


class _Depth(threading.local):
    depth = 0  # how deep in module calls this thread is


_CALLS = _Depth()
_is_compiling: Callable[[], bool] = bool  # torch.compiler.is_compiling, bound when recording starts


def start_recording() -> None:
    """Record the inputs of every PyTorch module's last top-level call from now on.

    Torch's global module hooks see every module call; only the outermost call of a nest is
    recorded (``net(x)`` records ``net``, not its layers), with the same rules as ``watch``
    (``_record``). The cost is two tiny Python calls per module call (``bench/recorder_overhead.py``)
    and the last inputs of each called model stay referenced (weak keys: never the model).
    Idempotent; when torch is not imported yet, recording starts right after its import. The
    ``%modelsave`` magic, the sidebar's kernel side and ``jms.widget()`` call it.
    """
    if "torch" not in sys.modules:
        _after_import("torch", start_recording)
        return
    if _RECORDER:
        return
    import torch
    from torch.nn.modules import module

    global _is_compiling
    _is_compiling = torch.compiler.is_compiling
    _RECORDER.append(module.register_module_forward_pre_hook(_entered))
    _RECORDER.append(module.register_module_forward_hook(_left, with_kwargs=True, always_call=True))
    _reset_depth_before_each_cell()


def stop_recording() -> None:
    """Remove the recorder's global hooks (recorded inputs are kept; ``watch`` hooks stay)."""
    while _RECORDER:
        _RECORDER.pop().remove()


def is_recording() -> bool:
    """Whether ``start_recording`` is in effect."""
    return bool(_RECORDER)


def _entered(module: Any, args: tuple) -> None:
    """Global forward pre-hook: one level deeper (nothing else: it runs for every module)."""
    if not _is_compiling():
        _CALLS.depth += 1


def _left(module: Any, args: tuple, *rest: Any) -> None:
    """Global forward hook: one level up; back at the top, record the call.

    Called as ``(module, args, kwargs, output)``, or ``(module, args, output)`` when the forward
    raised (torch then calls always-called hooks without keywords): a failed call is not recorded.
    """
    if _is_compiling():
        return
    depth = _CALLS.depth - 1
    _CALLS.depth = max(depth, 0)
    if depth <= 0 and len(rest) == 2 and module not in _HOOKS:
        _record(module, args, rest[0])


def _reset_depth_before_each_cell() -> None:
    """In IPython, start each cell at depth 0: Ctrl-C inside a forward skips torch's exit hooks."""
    shell = ipython_shell()
    if shell is not None and _reset_depth not in shell.events.callbacks["pre_run_cell"]:
        shell.events.register("pre_run_cell", _reset_depth)


def _reset_depth(*_: Any) -> None:
    _CALLS.depth = 0


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``callback`` right after module ``name`` is imported (then leaves ``sys.meta_path``)."""

    def __init__(self, name: str, callback: Callable[[], None]) -> None:
        self.name, self.callback = name, callback

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)  # what the other finders say
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module, callback = loader.exec_module, self.callback

        def exec_then_call(module: Any) -> None:
            exec_module(module)
            callback()

        loader.exec_module = exec_then_call
        return spec


def _after_import(name: str, callback: Callable[[], None]) -> None:
    if not any(isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, callback))


def watch(model: Any) -> None:
    """Record the inputs of ``model``'s future forward calls, nested calls included (only the
    last call is kept). ``start_recording`` records every model's top-level calls instead."""
    import torch

    if not isinstance(model, torch.nn.Module):
        raise NotAModelError(f"jms.watch needs a torch.nn.Module, got {type(model).__name__}.")
    if model not in _HOOKS:
        _HOOKS[model] = model.register_forward_pre_hook(_record, with_kwargs=True)


def unwatch(model: Any) -> None:
    """Remove the hook ``watch`` added and forget the recorded inputs."""
    handle = _HOOKS.pop(model, None)
    if handle is not None:
        handle.remove()
    _LAST_INPUTS.pop(model, None)


def last_inputs(model: Any) -> ExampleInputs | None:
    """The inputs of the last recorded forward call (``watch`` or ``start_recording``), or None."""
    recorded = _LAST_INPUTS.get(model)
    if recorded is None:
        return None
    from .inputs import ExampleInputs, input_names_for

    args, kwargs = recorded
    return ExampleInputs(args, dict(kwargs), input_names_for(model, len(args), list(kwargs)))


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
    from .frameworks import adapter, framework_of

    candidates: dict[int, tuple[str, Any, str]] = {}
    for name, value in list(namespace.items()):
        if name.startswith("_") or id(value) in candidates or isinstance(value, type):
            continue
        if (framework := framework_of(value)) is not None:
            candidates[id(value)] = (name, value, framework)
    nested = {
        id(sub) for _, model, fw in candidates.values() for sub in adapter(fw).submodels(model)
    }
    found = [(n, m, fw) for key, (n, m, fw) in candidates.items() if key not in nested]
    if watch_found:
        for _, model, framework in found:
            if adapter(framework).records_calls:
                watch(model)
    return [_described(name, model, fw) for name, model, fw in found]


def model_info(name: str, model: Any) -> ModelInfo:
    """A ``ModelInfo`` of a model of any framework (``NotAModelError`` for anything else)."""
    from .frameworks import adapter_for

    return _described(name, model, adapter_for(model).name)


def _described(name: str, model: Any, framework: str) -> ModelInfo:
    """The framework's description of ``model``, with the formats this process can export it to."""
    from .formats import formats, get_format
    from .frameworks import adapter

    usable = [n for n in formats(framework) if get_format(n, framework).available()]
    return adapter(framework).describe(name, model, usable)


def _default_namespace() -> dict[str, Any]:
    shell = ipython_shell()
    return shell.user_ns if shell is not None else sys._getframe(2).f_globals


def ipython_shell() -> Any:
    """IPython's running shell, or None (without importing IPython)."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None
