"""PyTorch models (``torch.nn.Module``) under the one flow.

What only PyTorch has lives here or in the PyTorch formats: the recorded last call as the default
example, ``device=`` (a copy of the model on another device; the live model never moves),
``exporter=`` and ``external_data=`` (torch.onnx's options), the live model kept exactly as it
was (``model_state.preserved``) with TF32 off for the reference (``model_state.reference_mode``),
transformers' key/value cache turned off (``hf.cache_off``), and sharded (DTensor) models, which
every rank stages together (``distributed``).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import hf
from ..errors import InvalidOptionError, shown
from ..inputs import EXAMPLE_INPUTS_HELP, ExampleInputs, TensorSpec, float_dtype, normalize_inputs
from ..model_state import preserved, reference_mode
from ..options import check_exporter, check_optional_flag, opset_range
from . import Adapter, Example


def device_of(model: torch.nn.Module) -> str:
    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    return str(tensor.device) if tensor is not None else "cpu"


def to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.cpu().numpy()


def flatten_outputs(output: Any) -> tuple[list[str], list[torch.Tensor]]:
    """Names and tensors; a transformers ``ModelOutput`` counts as a dict of its fields that are
    set (``hf.outputs_as_dict``)."""
    output = hf.outputs_as_dict(output)
    if isinstance(output, torch.Tensor):
        return ["output"], [output]
    leaves, _ = torch.utils._pytree.tree_flatten_with_path(output)
    names, tensors = [], []
    for path, leaf in leaves:
        if not isinstance(leaf, torch.Tensor):
            continue
        keys = "_".join(
            str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path
        )
        names.append(keys if isinstance(output, dict) else f"output_{keys}")
        tensors.append(leaf)
    return names, tensors


class TorchAdapter(Adapter):
    name = "torch"
    label = "PyTorch"
    noun = "PyTorch models"
    call_name = "forward()"
    example_help = EXAMPLE_INPUTS_HELP
    example_hint = "torch.randn(1, 3, 224, 224)"
    records_calls = True
    release_check = True
    shards = True

    def check_options(self, *, device: Any, exporter: Any, external_data: Any) -> dict[str, Any]:
        return {"device": device, "exporter": check_exporter(exporter),
                "external_data": check_optional_flag("external_data", external_data)}  # fmt: skip

    def check_ready(self, model: torch.nn.Module, runs: bool) -> None:
        """Refuse weights on the meta device: they have shapes but no values to export."""
        meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if meta:
            raise InvalidOptionError(
                f"{len(meta)} weight(s) of {type(model).__name__} are on the meta device and hold "
                f"no values (first: {meta[0]}). Load the weights first, e.g. "
                "model.to_empty(device='cpu') then model.load_state_dict(...)."
            )

    def example(self, model: Any, example_inputs: Any, required: bool) -> Example | None:
        """The given inputs, else the last recorded call's."""
        from ..discovery import last_inputs

        if example_inputs is None:
            recorded = last_inputs(model)
            if recorded is not None:
                return Example(recorded, "example inputs: the last recorded forward call's inputs")
            if not required:
                return None
        return Example(normalize_inputs(model, example_inputs))

    def placed(self, model: torch.nn.Module, example: ExampleInputs | None,
               device: Any) -> tuple[torch.nn.Module, ExampleInputs | None]:  # fmt: skip
        home = torch.device(self.device_of(model))
        if device is not None:
            try:
                target = torch.device(device)
            except (RuntimeError, TypeError, ValueError) as err:
                raise InvalidOptionError(
                    f"device={shown(device)} is not a torch device: {err}"
                ) from None
            if target != home:
                model = copy.deepcopy(model).to(target)
                home = target
        if example is not None and any(t.device != home for t in example.tensors):
            example = example.to(home)
        return model, example

    def call(self, model: torch.nn.Module, inputs: ExampleInputs) -> Any:
        return model(*inputs.args, **inputs.kwargs)

    flatten = staticmethod(flatten_outputs)
    to_numpy = staticmethod(to_numpy)
    spec = staticmethod(TensorSpec.of)
    device_of = staticmethod(device_of)

    float_dtype = staticmethod(float_dtype)

    def live_weights(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return model.state_dict()

    def bitwise_equal(self, live: torch.Tensor, reloaded: torch.Tensor) -> bool:
        return torch.equal(reloaded.cpu(), live.detach().cpu())

    def kept(self, model: torch.nn.Module, *, exporting: bool = False) -> Any:
        return preserved(model, hide_backward_hooks=exporting)

    def reference(self) -> Any:
        return reference_mode()

    def staging(self, model: torch.nn.Module) -> Any:
        """transformers' key/value cache off: export and parity see one forward pass."""
        return hf.cache_off(model)

    def opsets(self, exporter: str) -> tuple[int, int, str]:
        return (*opset_range(exporter), f"onnx and torch ({exporter} exporter)")

    def versions(self) -> dict[str, str]:
        return {"torch": str(torch.__version__)}

    def submodels(self, model: torch.nn.Module) -> list[Any]:
        return [sub for sub in model.modules() if sub is not model]

    def describe(self, name: str, model: torch.nn.Module, formats: list[str]) -> Any:
        """A sharded model's DTensors count with their full sizes (``DTensor.numel``)."""
        from ..discovery import ModelInfo, last_inputs
        from ..example_guess import guess_example
        from ..generation import can_generate

        tensors = [*model.parameters(), *model.buffers()]
        params = list(model.parameters())
        devices = sorted({str(t.device) for t in tensors}) or ["cpu"]
        float_dtypes = sorted(
            {str(t.dtype).removeprefix("torch.") for t in params if t.is_floating_point()}
        )
        last = last_inputs(model)
        guess = guess_example(model) if last is None else None
        sharding = sharding_note(tensors)
        return ModelInfo(
            name=name,
            class_name=type(model).__name__,
            num_params=sum(p.numel() for p in params),
            size_bytes=sum(t.numel() * t.element_size() for t in tensors),
            device=",".join(devices),
            dtype=",".join(float_dtypes) or "none",
            training=model.training,
            last_input=None if last is None else last.specs,
            framework=self.name,
            formats=formats,
            sharding=sharding,
            guessed_input=None if guess is None else guess.spec,
            guessed_expression=None if guess is None else guess.expression,
            can_generate=can_generate(model),
            variants=sharding is None and self.float_dtype(model) == "float32",
        )

    def load_into(self, model: torch.nn.Module, path: Path, fmt: Any, *, strict: bool,
                  map_location: Any, trusted: bool) -> Any:  # fmt: skip
        """``load_state_dict`` of the artifact's weights; returns the missing/unexpected keys."""
        from ..load_checks import check_fits, check_map_location, readable, without_non_persistent

        device = check_map_location(map_location if map_location is not None else device_of(model))
        loaded = readable(path, f"a {fmt.name} artifact", lambda: fmt.load(path, device, trusted))
        weights = without_non_persistent(model, fmt.weights(loaded))
        check_fits(model, weights, strict, path)
        return model.load_state_dict(weights, strict=strict)


def sharding_note(tensors: list[Any]) -> str | None:
    """``"sharded over N ranks"`` when any of ``tensors`` is a DTensor (for ``find_models``), else None."""
    if "torch.distributed.tensor" not in sys.modules:
        return None
    from torch.distributed.tensor import DTensor  # imported: DTensors can exist

    meshes = {id(t.device_mesh): t.device_mesh for t in tensors if isinstance(t, DTensor)}
    if not meshes:
        return None
    ranks = max(mesh.size() for mesh in meshes.values())
    return f"sharded over {ranks} rank{'s' if ranks != 1 else ''}"


def module_runner(module: Any, output_names: list[str]) -> Callable[[ExampleInputs], dict]:
    """An artifact runner for artifacts that load as torch callables (TorchScript, .pt2)."""

    def run(probe: ExampleInputs) -> dict[str, np.ndarray]:
        with torch.no_grad():
            _, tensors = flatten_outputs(module(*probe.args, **probe.kwargs))
        return {n: to_numpy(t) for n, t in zip(output_names, tensors)}

    return run
