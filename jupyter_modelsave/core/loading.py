"""Loading a written artifact back, after checking it against its manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import artifacts
from .errors import IntegrityError, InvalidOptionError
from .formats import format_for_path, get_format


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The ``<artifact>.json`` manifest beside ``path``, or None when there is none."""
    manifest = Path(f"{path}.json")
    if not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text())
    except (OSError, ValueError) as err:
        raise IntegrityError(f"The manifest {manifest} cannot be read: {err}.") from err


def load(path: str | Path, *, map_location: str = "cpu") -> Any:
    """Load an artifact as its natural object (ONNX: an ``onnxruntime.InferenceSession``).

    When a manifest is present its sha256 is checked first (``IntegrityError`` on mismatch); the
    format comes from the manifest, else from the file extension.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidOptionError(f"No artifact at {path}.")
    manifest = read_manifest(path)
    if manifest is not None:
        actual = artifacts.sha256_of(path)
        if actual != manifest.get("sha256"):
            raise IntegrityError(
                f"{path} does not match its manifest: sha256 {actual[:12]}... was expected to be "
                f"{str(manifest.get('sha256'))[:12]}.... The file was changed or damaged; export it again."
            )
        fmt = get_format(manifest.get("format"))
    else:
        fmt = format_for_path(str(path))
        if fmt is None:
            raise InvalidOptionError(
                f"Cannot tell the format of {path}: no manifest and an unknown extension."
            )
    return fmt.load(path, map_location=map_location)
