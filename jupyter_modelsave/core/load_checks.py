"""Checks before loading: the artifact's path, the device to load on, the weights fitting the model,
and damaged files read as one typed error (``loading``, the formats, ``distributed.loading``)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import IntegrityError, InvalidOptionError, StateDictMismatchError, raised_as

if TYPE_CHECKING:
    import torch


def check_map_location(map_location: Any) -> torch.device:
    """A ``torch.device`` that exists on this machine, or ``InvalidOptionError`` saying why."""
    import torch

    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidOptionError(
            f"map_location={map_location!r} is not a device; use 'cpu', 'cuda', 'cuda:1' or a "
            "torch.device."
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise InvalidOptionError(
                f"map_location={map_location!r}, but this machine has {count} CUDA device(s); "
                "use map_location='cpu'."
            )
    return device


def artifact_path(path: Any) -> Path:
    """``path`` (``~`` expanded, as ``write`` does) as an existing file or folder (not a FIFO or a
    device: reading could block)."""
    try:
        path = Path(os.path.expanduser(path))
        info = path.stat()
    except (TypeError, ValueError, OSError):  # not a path, a NUL byte, missing, too long
        raise InvalidOptionError(
            f"No artifact at {path!r}; pass the path of a written artifact."
        ) from None
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise InvalidOptionError(f"{path} is not a file or a folder, so not an artifact.")
    return path


def without_non_persistent(model: torch.nn.Module, weights: dict[str, Any]) -> dict[str, Any]:
    """``weights`` less the model's non-persistent buffers (not in its ``state_dict()``).

    TorchScript archives store every buffer, also those registered with ``persistent=False``
    (BERT's ``embeddings.position_ids``); ``load_state_dict`` never loads those, so they are
    neither unexpected nor copied.
    """
    kept = model.state_dict().keys()
    transient = {name for name, _ in model.named_buffers() if name not in kept}
    return {k: v for k, v in weights.items() if k not in transient}


def check_fits(model: torch.nn.Module, weights: dict[str, Any], strict: bool, path: Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = sorted(k for k in weights if k not in expected)
    reshaped = [
        f"{k}: model {list(expected[k].shape)}, artifact {list(weights[k].shape)}"
        for k in expected
        if k in weights and expected[k].shape != weights[k].shape
    ]
    problems = [
        *([f"{len(missing)} missing: {', '.join(missing)}"] if strict and missing else []),
        *([f"{len(unexpected)} unexpected: {', '.join(unexpected)}"] if strict and unexpected else []),
        *([f"{len(reshaped)} with another shape: {'; '.join(reshaped)}"] if reshaped else []),
    ]  # fmt: skip
    if problems:
        hint = " Pass strict=False to load the matching keys only." if not reshaped else ""
        raise StateDictMismatchError(
            f"The weights in {path.name} do not fit {type(model).__name__}: "
            + "; ".join(problems)
            + f".{hint} Check that the model is built with the same configuration.",
            missing,
            unexpected,
            reshaped,
        )


def readable(path: Path, what: str, read: Callable[[], Any]) -> Any:
    """``read()``, turning the many errors of damaged or foreign files into one ``IntegrityError``.

    ``ModelSaveError``s (``UnsafeArtifactError`` among them) pass through unchanged; torch.load,
    zipfile, safetensors and ORT each raise their own types.
    """
    after = "). It is damaged or not what its name says; export it again."
    with raised_as(IntegrityError, f"{path} cannot be read as {what} (", after):
        return read()
