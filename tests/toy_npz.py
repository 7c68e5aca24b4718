"""A format added as the README's "Adding a format" shows: one module, one registry line.

``npz``: a PyTorch model's ``state_dict`` as numpy arrays in one ``.npz`` file. It stores weights
only (``WeightsFormat``: saved without running the model, checked by a bitwise reload), so it
declares ``WEIGHTS`` capabilities; every surface reads them from there. (numpy has no bfloat16:
a toy, for float32 and float16 models.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from jupyter_modelsave.core.formats.base import Exported, ExportJob, WeightsFormat


class NpzFormat(WeightsFormat):
    name = "npz"
    extension = ".npz"
    description = "state_dict as numpy arrays (.npz), checked by a bitwise reload"

    def export(self, job: ExportJob) -> Exported:
        path = job.workdir / "model.npz"
        np.savez(path, **{k: t.detach().cpu().numpy() for k, t in job.model.state_dict().items()})
        return Exported(path, "numpy.savez")

    def load(self, path: Path, map_location: Any = "cpu", trusted: bool = False) -> Any:
        with np.load(path, allow_pickle=False) as arrays:  # no pickles: safe untrusted
            return {k: torch.from_numpy(arrays[k]).to(map_location) for k in arrays.files}
