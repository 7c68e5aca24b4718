"""state_dict: ``torch.save(model.state_dict())`` in one ``.pt`` file.

The most common PyTorch weights file. ``torch.save`` keeps shared storage, so tied weights come
back tied. Loading uses ``torch.load(weights_only=True)``: tensors, containers and primitives only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ._torchload import is_torchscript_archive, safe_torch_load
from .base import Exported, ExportJob, WeightsFormat

FILE = "model.pt"


class StateDictFormat(WeightsFormat):
    name = "state_dict"
    extension = ".pt"
    description = "torch.save(model.state_dict()), loaded with weights_only=True"

    def matches(self, path: Path) -> bool:
        return str(path).endswith((".pt", ".pth")) and not is_torchscript_archive(path)

    def export(self, job: ExportJob) -> Exported:
        path = job.workdir / FILE
        torch.save(job.model.state_dict(), path)
        return Exported(path, "torch.save")

    def load(self, path: Path, map_location: Any = "cpu", trusted: bool = False) -> Any:
        return safe_torch_load(Path(path), map_location, trusted)
