"""Loading a written artifact back, after checking it against its manifest.

An artifact is trusted when the caller says so (``trusted=True``) or when its manifest carries
this user's signature (``trust.py``) over the sha256 just computed. Untrusted artifacts run no
code from the file and are read within a bounded amount of memory (``limits.py``); each format's
module says how it keeps to that, and refuses (``UnsafeArtifactError``) what it cannot check.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import hashing, trust
from .errors import IntegrityError, InvalidOptionError, StateDictMismatchError, raised_as
from .formats import format_for_path, get_format
from .formats.base import ArtifactFormat
from .frameworks import adapter_for
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
    if (collective := adapter.collective(model)) is not None:  # every rank loads its slices
        return collective.load_into(model, path, strict=strict, map_location=map_location,
                                    trusted=trusted)  # fmt: skip
    trusted, strict = check_flag("trusted", trusted), check_flag("strict", strict)
    path, fmt, signed = _checked(path)
    return adapter.load_into(model, path, fmt, strict=strict, map_location=map_location,
                             trusted=trusted or signed)  # fmt: skip


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


def _checked(path: str | Path) -> tuple[Path, ArtifactFormat, bool]:
    """The artifact's path, its format, and whether this user signed it, after checking it
    against its manifest (a sha256 that matches proves no authorship: only the signature does)."""
    path = _artifact_path(path)
    manifest = read_manifest(path)
    if manifest is None:
        fmt = readable(path, "a model artifact", lambda: format_for_path(str(path)))
        if fmt is None:
            raise InvalidOptionError(
                f"Cannot tell the format of {path}: no manifest and an unknown extension."
            )
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


def _artifact_path(path: Any) -> Path:
    """``path`` as an existing file or folder (not a FIFO or a device: reading could block)."""
    try:
        path = Path(path)
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
