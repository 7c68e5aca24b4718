"""``torch.load`` that never unpickles arbitrary objects unless the caller trusts the file."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import UnsafeArtifactError

TRUST_HINT = (
    "Loading it would unpickle arbitrary Python objects, which can run any code. If you made this "
    "file yourself or trust its source, pass trusted=True."
)


def safe_torch_load(source: Path | bytes, map_location: Any, trusted: bool) -> Any:
    """``torch.load`` with ``weights_only=True`` (tensors, containers, primitives only).

    A file that needs more raises ``UnsafeArtifactError`` naming the objects it asks for;
    ``trusted=True`` loads it with full unpickling.
    """
    try:
        return torch.load(_opened(source), map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError:
        if trusted:
            raise
        names = _unsafe_globals(source)
        asks = f" It asks for {', '.join(names)}." if names else ""
        raise UnsafeArtifactError(
            f"{_label(source)} is not a plain tensor file.{asks} {TRUST_HINT}"
        ) from None


def is_torchscript_archive(path: Path) -> bool:
    """TorchScript archives hold ``code/`` and ``constants.pkl``; ``torch.save`` files do not."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _opened(source: Path | bytes) -> Any:
    return io.BytesIO(source) if isinstance(source, bytes) else str(source)


def _label(source: Path | bytes) -> str:
    return "The archive member" if isinstance(source, bytes) else str(source)


def _unsafe_globals(source: Path | bytes) -> list[str]:
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(_opened(source))
    except Exception:  # a damaged or legacy (non-zip) file: the message stays generic
        return []
