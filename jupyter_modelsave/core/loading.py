"""Loading a written artifact back, after checking it against its manifest.

An artifact is trusted when the caller says so (``trusted=True``) or when its manifest carries
this user's signature (``trust.py``) over the sha256 just computed. Untrusted artifacts run no
code from the file and are read within a bounded amount of memory (``limits.py``); each format's
module says how it keeps to that, and refuses (``UnsafeArtifactError``) what it cannot check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import hashing, trust
from .distributed import collective_flow
from .errors import IntegrityError, InvalidOptionError
from .formats import format_for_path, get_format
from .formats.base import ArtifactFormat
from .frameworks import adapter_for
from .load_checks import artifact_path, check_map_location, readable
from .manifest import read_manifest
from .options import check_flag

if TYPE_CHECKING:
    import torch


def load(
    path: str | Path, *, map_location: str | torch.device = "cpu", trusted: bool = False
) -> Any:
    """Load an artifact as its natural object.

    ONNX: an ``onnxruntime.InferenceSession``; safetensors and state_dict: a state dict;
    checkpoint: the checkpoint dict; torchscript: a ``ScriptModule``; torch_export: an
    ``ExportedProgram``. When a manifest is present its sha256 is checked first
    (``IntegrityError`` on mismatch); the format comes from the manifest, else from the file.
    ``map_location`` ("cpu", "cuda", "cuda:1", a ``torch.device``) is where tensors land, so a
    GPU-saved artifact loads on a CPU-only machine. An artifact you wrote (its manifest signed
    with your key) is trusted as it is; for others ``trusted=True`` allows what could run code
    (full unpickling, TorchScript, ``.pt2``, SavedModel; else ``UnsafeArtifactError``) and lifts
    the memory bound: only for files you trust.
    """
    trusted = check_flag("trusted", trusted)
    path, fmt, signed = _checked(path)
    trusted = trusted or signed
    device = check_map_location(map_location)
    return readable(path, f"a {fmt.name} artifact", lambda: fmt.load(path, device, trusted))


def load_into(
    model: Any,
    path: str | Path,
    *,
    strict: bool = True,
    map_location: str | torch.device | None = None,
    trusted: bool = False,
) -> Any:
    """Copy an artifact's weights into ``model``; for PyTorch, return its missing/unexpected keys.

    With ``strict=True`` (the default) every key must match, and shapes always must:
    otherwise ``StateDictMismatchError`` lists the missing, unexpected and reshaped keys, and the
    model is left unchanged. ``map_location`` defaults to the model's device. Tied weights stay
    tied: aliases come back as one tensor, copied into each name. A Keras model takes the
    weights of a ``weights`` or ``keras`` artifact (returns None).
    """
    adapter = adapter_for(model)
    if (
        adapter.shards and (collective := collective_flow(model)) is not None
    ):  # each rank: its slices
        return collective.load_into(model, path, strict=strict, map_location=map_location,
                                    trusted=trusted)  # fmt: skip
    trusted, strict = check_flag("trusted", trusted), check_flag("strict", strict)
    path, fmt, signed = _checked(path)
    return adapter.load_into(model, path, fmt, strict=strict, map_location=map_location,
                             trusted=trusted or signed)  # fmt: skip


def _unknown_format_message(path: Path) -> str:
    """No manifest and an unknown extension; for a manifest itself, the artifact to pass."""
    stem = path.name.removesuffix(".json")
    if stem not in ("", ".", "..", path.name) and os.path.lexists(artifact := path.parent / stem):
        return f"{path} is the manifest of {stem}; pass the artifact's path, {artifact}."
    return f"Cannot tell the format of {path}: no manifest and an unknown extension."


def _checked(path: str | Path) -> tuple[Path, ArtifactFormat, bool]:
    """The artifact's path, its format, and whether this user signed it, after checking it
    against its manifest (a sha256 that matches proves no authorship: only the signature does)."""
    path = artifact_path(path)
    manifest = read_manifest(path)
    if manifest is None:
        fmt = readable(path, "a model artifact", lambda: format_for_path(str(path)))
        if fmt is None:
            raise InvalidOptionError(_unknown_format_message(path))
        return path, fmt, False
    actual = hashing.sha256_of(path)
    if actual != manifest.get("sha256"):
        raise IntegrityError(
            f"{path} does not match its manifest: sha256 {actual[:12]}... was expected to be "
            f"{str(manifest.get('sha256'))[:12]}.... The file was changed or damaged; export it again."
        )
    try:
        fmt = get_format(manifest.get("format"), manifest.get("framework"))
    except InvalidOptionError:
        raise IntegrityError(
            f"The manifest of {path} names the format {manifest.get('format')!r} "
            f"({manifest.get('framework')!r}), which this version of jupyter_modelsave does not "
            "know. Update it, or export the model again."
        ) from None
    return path, fmt, trust.is_signed(actual, fmt.name, manifest.get("signature"))
