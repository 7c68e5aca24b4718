"""What a sharded model's ``state_dict`` looks like from one rank: full shapes, tied names, the mesh,
and where this rank's slice of each tensor sits in the full tensor."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InvalidOptionError
from ..formats.safetensors_format import _view_key

Shape = tuple[int, ...]


def sharded_state(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(the tensors to save, {alias: original}) of ``model.state_dict()``.

    A name whose tensor is the same object as an earlier name's (tied weights: FSDP2 and tensor
    parallel keep one DTensor for both), or for plain tensors the same view, becomes an alias, as
    in the single-process safetensors export; identity is the same on every rank.
    """
    seen: dict[Any, str] = {}
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():  # tied names: one object
        if not isinstance(tensor, torch.Tensor):
            raise InvalidOptionError(
                f"state_dict entry {name!r} is a {type(tensor).__name__}, not a tensor; "
                "safetensors holds tensors only."
            )
        key = ("object", id(tensor)) if is_dtensor(tensor) else _view_key(tensor)
        first = name if key is None else seen.setdefault(key, name)
        if first == name:
            tensors[name] = tensor
        else:
            aliases[name] = first
    return tensors, aliases


def full_specs(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[Shape, torch.dtype]]:
    """Name -> (full shape, dtype); a DTensor's shape is already its full shape."""
    return {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}


def local_chunk(tensor: torch.Tensor) -> tuple[torch.Tensor, Shape]:
    """This rank's part of ``tensor`` and its offsets in the full tensor (a plain tensor: all of it)."""
    if not is_dtensor(tensor):
        return tensor.detach(), (0,) * tensor.dim()
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    local = tensor.to_local().detach()
    shape, offsets = compute_local_shape_and_global_offset(
        tensor.shape, tensor.device_mesh, tensor.placements
    )
    if tuple(local.shape) != tuple(shape):
        raise InvalidOptionError(
            f"A DTensor's local shard {tuple(local.shape)} is not the block {tuple(shape)} its "
            f"placements {tensor.placements} describe; jupyter_modelsave cannot locate it."
        )
    return local, tuple(offsets)


def mesh_description(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The mesh of the model's DTensors (the largest one, when there are several)."""
    meshes = {id(t.device_mesh): t.device_mesh for t in tensors.values() if is_dtensor(t)}
    mesh = max(meshes.values(), key=lambda m: m.size())
    return {
        "shape": list(mesh.shape),
        "dim_names": list(mesh.mesh_dim_names) if mesh.mesh_dim_names else None,
        "device_type": mesh.device_type,
        "ranks": mesh.mesh.flatten().tolist(),
    }


def is_dtensor(tensor: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)
