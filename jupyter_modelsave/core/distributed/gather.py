"""Formats other than safetensors for a sharded model: gather the weights to rank 0, export there.

ONNX, TorchScript, torch.export, state_dict and checkpoint need the whole model in one process.
Gathering is refused unless ``gather=True`` (``InvalidOptionError`` naming the memory it would
take); with it, rank 0 warns how much memory it will hold before anything moves, then every rank
all-gathers the DTensors one at a time (``DTensor.full_tensor``: each rank briefly holds one full
tensor) and rank 0 keeps them. Rank 0 builds a plain copy of the model (the classes FSDP2 wrapped
restored, the tensors full, no hooks: FSDP's and tensor parallel's hooks would start collectives)
and stages it as an unsharded model: parity compares the artifact with that copy. The staged
export lives on rank 0; ``GatheredStagedExport`` gives every rank the same view, and its ``write``
is collective (rank 0 writes, every rank returns the path).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..discovery import last_inputs
from ..errors import InvalidOptionError
from ._collective import Collective, joined
from ._state import is_dtensor

_SHARDING_ATTRIBUTES = (
    "_is_fsdp_managed_module",
    "_fsdp_use_orig_params",
    "_distribute_module_applied",
)
_STATE_KEY = "__composable_api_state_key"
_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
               "_backward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
               "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")  # fmt: skip
_SUMMARY = ("format", "exporter", "opset", "path", "report", "name", "warnings", "metadata",
            "input_specs", "output_specs", "dynamic_axes", "size_bytes", "file_hashes", "sha256",
            "tolerances")  # fmt: skip


class GatheredWarning(UserWarning):
    """Rank 0 is about to hold a sharded model's full weights (the message says how many bytes)."""


def stage_gathered(model: torch.nn.Module, example_inputs: Any, stage: Callable[..., Any], *,
                   timeout: float, gather: Any, format: str, call: str = "jms.stage",
                   **options: Any) -> GatheredStagedExport:  # fmt: skip
    """``jms.stage`` of a sharded model in a format that needs the whole model (collective);
    rank 0 stages the gathered copy with ``stage`` (``core.staging.stage``, handed in)."""
    with joined(call, timeout) as coll:
        nbytes = coll.agree(lambda: _check_gather(model, gather, format))[0]
        message = (f"gathered to rank 0 for format {format!r}: rank 0 held all {nbytes:,} bytes "
                   "of the sharded model's weights, plus what the exporter needs")  # fmt: skip
        if coll.is_coordinator:
            warnings.warn(f"jupyter_modelsave: {message}.", GatheredWarning, stacklevel=4)
        full = _gather(model, coll)
        inputs = example_inputs if example_inputs is not None else _recorded(model)

        def stage_plain() -> dict[str, Any]:
            staged = stage(unsharded_copy(model, full), inputs, format=format, **options)
            staged.warnings.insert(0, message)
            holder.append(staged)
            return {key: getattr(staged, key) for key in _SUMMARY}

        holder: list[Any] = []
        summary = coll.from_coordinator(stage_plain)
        return GatheredStagedExport(holder[0] if holder else None, summary, coll.timeout)


class GatheredStagedExport:
    """A sharded model staged on rank 0 in a format that needs the whole model.

    The same attributes on every rank (``format``, ``sha256``, ``report``, ``path``, ...);
    ``write`` and ``verify`` are collective (call them on every rank); ``discard`` deletes the
    staged files on rank 0 (elsewhere it does nothing).
    """

    def __init__(self, inner: Any, summary: dict[str, Any], timeout: float) -> None:
        self.__dict__.update(summary)
        self._inner = inner
        self._timeout = timeout

    @property
    def discarded(self) -> bool:
        return self._inner.discarded if self._inner is not None else False

    def write(self, dest: str | Path, **options: Any) -> Path:
        """Write on rank 0 (``StagedExport.write``); every rank returns the same path."""
        with joined("StagedExport.write", self._timeout) as coll:
            return Path(coll.from_coordinator(lambda: str(self._inner.write(dest, **options))))

    def verify(self, **tolerances: Any) -> Any:
        """Check parity again on rank 0; every rank gets the report."""
        with joined("StagedExport.verify", self._timeout) as coll:
            self.report = coll.from_coordinator(lambda: self._inner.verify(**tolerances))
        return self.report

    def discard(self) -> None:
        if self._inner is not None:
            self._inner.discard()

    def __repr__(self) -> str:
        return f"<GatheredStagedExport of rank 0: {self.name} {self.format}, sha256 {self.sha256[:12]}>"


def _check_gather(model: torch.nn.Module, gather: Any, format: str) -> int:
    """The bytes rank 0 would hold; ``InvalidOptionError`` unless ``gather=True``."""
    nbytes = sum(t.numel() * t.element_size() for t in _unique_tensors(model))
    if gather is True:
        return nbytes
    if gather is not False:
        raise InvalidOptionError(f"gather must be True or False, got {gather!r}.")
    raise InvalidOptionError(
        f"format {format!r} needs the whole model in one process, and this model is sharded "
        f"(DTensor weights): gathering it to rank 0 takes {nbytes:,} bytes of rank 0's memory. "
        "Pass gather=True to do that, or export format='safetensors' (every rank writes its own "
        "part, nothing is gathered)."
    )


def _gather(model: torch.nn.Module, coll: Collective) -> dict[int, torch.Tensor]:
    """id(tensor) -> its full value, on rank 0 (empty elsewhere); one all-gather per DTensor."""
    full: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for tensor in _unique_tensors(model):
            value = tensor.full_tensor() if is_dtensor(tensor) else tensor.clone()
            if coll.is_coordinator:
                full[id(tensor)] = value.detach()
            del value
    return full


def _unique_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    return list({id(t): t for t in (*model.parameters(), *model.buffers())}.values())


def _recorded(model: torch.nn.Module) -> Any:
    """The last recorded call's inputs, as ``stage`` takes them (None when nothing was recorded)."""
    recorded = last_inputs(model)
    if recorded is None:
        return None
    if recorded.args and recorded.kwargs:
        raise InvalidOptionError(
            "The last recorded call mixed positional and keyword tensors; pass example_inputs."
        )
    return recorded.args or recorded.kwargs


def unsharded_copy(model: torch.nn.Module, full: dict[int, torch.Tensor]) -> torch.nn.Module:
    """``model``'s structure with the full tensors ``full`` (by id of the DTensor), without hooks.

    FSDP2's wrapper classes (``FSDPLinear``) become the classes they wrap; FSDP's and tensor
    parallel's attributes and every hook are left out; tied parameters stay tied.
    """
    modules: dict[int, torch.nn.Module] = {}
    params: dict[int, torch.nn.Parameter] = {}

    def plain_param(param: torch.nn.Parameter | None) -> torch.nn.Parameter | None:
        if param is None:
            return None
        if id(param) not in params:
            params[id(param)] = torch.nn.Parameter(full[id(param)], param.requires_grad)
        return params[id(param)]

    def copy(module: torch.nn.Module) -> torch.nn.Module:
        if id(module) in modules:
            return modules[id(module)]
        cls = _unwrapped_class(type(module))
        plain = cls.__new__(cls)
        modules[id(module)] = plain
        state = {k: v for k, v in module.__dict__.items()
                 if not k.startswith(_STATE_KEY) and k not in _SHARDING_ATTRIBUTES}  # fmt: skip
        state.update({hook: OrderedDict() for hook in _HOOK_DICTS if hook in state})
        state["_non_persistent_buffers_set"] = set(module._non_persistent_buffers_set)
        state["_parameters"] = {n: plain_param(p) for n, p in module._parameters.items()}
        state["_buffers"] = {
            n: None if b is None else full[id(b)] for n, b in module._buffers.items()
        }
        plain.__dict__.update(state)
        plain.__dict__["_modules"] = {
            n: None if sub is None else copy(sub) for n, sub in module._modules.items()
        }
        return plain

    return copy(model)


def _unwrapped_class(cls: type) -> type:
    """The class FSDP2's ``fully_shard`` wrapped (``FSDPLinear`` -> ``Linear``), else ``cls``."""
    from torch.distributed.fsdp import FSDPModule

    if not issubclass(cls, FSDPModule):
        return cls
    return next(
        c for c in cls.__mro__ if not issubclass(c, FSDPModule) and issubclass(c, torch.nn.Module)
    )
