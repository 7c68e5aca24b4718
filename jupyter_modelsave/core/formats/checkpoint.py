"""checkpoint: a training checkpoint in one ``.pt`` file, loadable with ``weights_only=True``.

``jms.stage(model, format="checkpoint", optimizer=opt, epoch=3, step=1200, config={...})`` saves
a dict with the keys ``model_state``, ``optimizer`` (``opt.state_dict()`` or None), ``epoch``,
``step``, ``config``, ``rng_states`` (``torch``, ``cuda`` when CUDA is initialised, ``python``,
``numpy``), ``torch_version`` and ``metadata``. Every value is a tensor, a container or a primitive,
so the file loads with ``weights_only=True``; ``config`` is checked for that when staging.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InvalidOptionError
from ._torchload import safe_torch_load
from .base import Exported, ExportJob, WeightsFormat

FILE = "checkpoint.pt"
OPTIONS = ("optimizer", "epoch", "step", "config")
_PRIMITIVES = (str, int, float, bool, type(None), torch.Tensor)


class CheckpointFormat(WeightsFormat):
    name = "checkpoint"
    extension = ".pt"
    description = "model_state + optimizer, epoch, step, config and RNG states, weights_only-safe"

    def matches(self, path: Path) -> bool:
        return False  # a .pt without manifest loads through state_dict: the same torch.load

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise InvalidOptionError(
                f"format 'checkpoint' takes {', '.join(OPTIONS)}, not {', '.join(sorted(unknown))}."
            )
        optimizer = options.get("optimizer")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise InvalidOptionError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}."
            )
        for key in ("epoch", "step"):
            value = options.get(key)
            natural = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            if value is not None and not natural:
                raise InvalidOptionError(f"{key} must be a non-negative int, got {value!r}.")  # fmt: skip
        config = options.get("config", {})
        if not isinstance(config, Mapping):
            raise InvalidOptionError(f"config must be a dict, got {type(config).__name__}.")
        config = dict(config)
        _check_plain(config, "config")
        return {**dict.fromkeys(OPTIONS), **options, "config": config}

    def export(self, job: ExportJob) -> Exported:
        options = job.format_options
        optimizer = options["optimizer"]
        checkpoint = {
            "model_state": job.model.state_dict(),
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            "epoch": options["epoch"],
            "step": options["step"],
            "config": options["config"],
            "rng_states": rng_states(),
            "torch_version": str(torch.__version__),
            "metadata": job.metadata,
        }
        path = job.workdir / FILE
        torch.save(checkpoint, path)
        return Exported(path, "torch.save")

    def load(self, path: Path, map_location: Any = "cpu", trusted: bool = False) -> Any:
        return safe_torch_load(Path(path), map_location, trusted)

    def weights(self, loaded: Any) -> dict[str, torch.Tensor]:
        return loaded["model_state"]


def rng_states() -> dict[str, Any]:
    """The random number generators' states, as tensors and primitives only."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "bit_generator": name,
            "state": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached_gaussian": cached,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _check_plain(value: Any, where: str) -> None:
    """Refuse what ``torch.load(weights_only=True)`` could not read back."""
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise InvalidOptionError(f"{where} has a {type(key).__name__} key; use str keys.")
            _check_plain(item, f"{where}[{key!r}]")
    elif type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _PRIMITIVES):
        raise InvalidOptionError(
            f"{where} is a {type(value).__name__}: a checkpoint's config may hold only str, int, "
            "float, bool, None, lists, tuples, dicts and tensors, so that it loads with "
            "weights_only=True. Convert it first (e.g. dataclasses.asdict, str)."
        )
