"""``torch.load`` that never unpickles arbitrary objects unless the caller trusts the file.

Untrusted files are also checked for memory (``limits.py``) before ``torch.load`` opens them:
they must be zip archives (``torch.save``'s format since torch 1.6; the older one needs trust)
with uncompressed members, and their ``data.pkl`` may create only as many objects as the bound
allows. torch itself checks that every storage's declared size matches its record.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .. import limits
from ..errors import UnsafeArtifactError

TRUST_HINT = (
    "Loading it would unpickle arbitrary Python objects, which can run any code. If you made this "
    "file yourself or trust its source, pass trusted=True."
)
PROGRAM_HINT = (
    "Artifacts you wrote yourself with jupyter_modelsave are signed with your key and load as "
    "they are; for this one, pass trusted=True only if you trust its source (or ask for a "
    "safetensors or state_dict export, which loads without running anything)."
)


def safe_torch_load(source: Path | bytes, map_location: Any, trusted: bool) -> Any:
    """``torch.load`` with ``weights_only=True`` (tensors, containers, primitives only).

    A file that needs more raises ``UnsafeArtifactError`` naming the objects it asks for;
    ``trusted=True`` loads it with full unpickling.
    """
    if not trusted:
        check_memory(source)
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


def check_memory(source: Path | bytes) -> None:
    """Refuse a file whose loading could grow memory past ``limits.memory_bound`` of its size."""
    size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    label = _label(source)
    try:
        archive = zipfile.ZipFile(_opened(source))
    except (zipfile.BadZipFile, OSError, ValueError):
        raise UnsafeArtifactError(
            f"{label} is not a zip archive as torch.save writes since torch 1.6 (or it is "
            f"damaged); the older format is loaded only when trusted. {limits.TRUST_MEMORY_HINT}"
        ) from None
    budget = limits.memory_bound(size) - 2 * size  # the records and data.pkl are read too
    with archive:
        limits.check_stored_zip(archive, label)
        pickles = [n for n in archive.namelist() if n.endswith(".pkl")]
        cost = 0
        for name in pickles:
            try:
                cost += limits.pickle_cost(archive.read(name), budget - cost)
            except Exception as err:  # pickletools raises ValueError and others on junk
                raise UnsafeArtifactError(
                    f"{label}: its member {name} is not a pickle ({type(err).__name__}). "
                    f"{limits.TRUST_MEMORY_HINT}"
                ) from None
    if cost > budget:
        raise UnsafeArtifactError(
            f"{label} is {size:,} bytes, but its pickle creates objects worth more than an "
            f"untrusted load may take ({budget:,} bytes). It was crafted to fill "
            f"memory, or holds unusually many tiny tensors. {limits.TRUST_MEMORY_HINT}"
        )


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
