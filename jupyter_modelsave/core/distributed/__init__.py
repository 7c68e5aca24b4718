"""Models bigger than one process: weights that are DTensors (FSDP2 ``fully_shard``, tensor parallel).

For a model of an adapter that ``shards`` (PyTorch's), ``stage``, ``export`` and ``load_into`` ask
``collective_flow`` whether it is one, and then hand it to the flow every rank runs together
(``find_models`` names its sharding: ``frameworks.torch.sharding_note``). The work is done in the
modules beside this one, through ``torch.distributed.checkpoint`` (DCP): ``export`` (the
collective safetensors export and its parity), ``gather`` (other formats, by gathering the weights
to rank 0 on request), ``loading`` (each rank loads its slices), ``convert`` (a DCP checkpoint
folder into a safetensors artifact) and ``_collective`` (jms's own process group with a timeout).
Nothing here imports ``torch.distributed`` unless the process already has.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any


def is_sharded(model: Any) -> bool:
    """Whether ``model`` is an ``nn.Module`` with a DTensor among its parameters and buffers."""
    if "torch.distributed.tensor" not in sys.modules:  # no DTensor can exist yet
        return False
    import torch
    from torch.distributed.tensor import DTensor

    if not isinstance(model, torch.nn.Module):
        return False

    return any(isinstance(t, DTensor) for t in (*model.parameters(), *model.buffers()))


def collective_flow(model: Any) -> Any:
    """For a sharded model, its ``stage``, ``export`` and ``load_into`` (collective calls: every
    rank makes them); None for any other model."""
    if not is_sharded(model):
        return None
    from .export import export_sharded, stage_sharded
    from .loading import load_into_sharded

    return SimpleNamespace(stage=stage_sharded, export=export_sharded, load_into=load_into_sharded)
