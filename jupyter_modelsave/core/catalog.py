"""What was saved in a folder: the artifacts that have a jupyter_modelsave manifest beside them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidOptionError


@dataclass(frozen=True)
class ArtifactInfo:
    """One written artifact, as its manifest describes it (the sha256 is not re-checked)."""

    path: Path
    name: str
    version: str
    format: str
    sha256: str
    size_bytes: int
    created: str  # ISO 8601, UTC
    parity_passed: bool | None  # None: written without a parity check


def list_artifacts(folder: str | Path) -> list[ArtifactInfo]:
    """The artifacts in ``folder``, newest first (by creation time, then version).

    An artifact counts when its ``<artifact>.json`` manifest was written by jupyter_modelsave and
    the artifact is still there; other files are ignored.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InvalidOptionError(f"{folder} is not a folder.")
    manifests = [m for m in folder.glob("*.json") if not m.name.startswith(".")]  # not temporaries
    found = [info for m in manifests if (info := _info(m)) is not None]
    return sorted(
        found, key=lambda i: (i.created, _version_key(i.version), i.path.name), reverse=True
    )


def _info(manifest: Path) -> ArtifactInfo | None:
    artifact = manifest.with_name(manifest.name.removesuffix(".json"))
    try:
        data: dict[str, Any] = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if (
        not isinstance(data, dict)
        or data.get("producer") != "jupyter_modelsave"
        or not artifact.exists()
    ):
        return None
    parity = data.get("parity")
    return ArtifactInfo(
        path=artifact,
        name=str(data.get("name", "")),
        version=str(data.get("version", "")),
        format=str(data.get("format", "")),
        sha256=str(data.get("sha256", "")),
        size_bytes=int(data.get("size_bytes") or 0),
        created=str(data.get("created", "")),
        parity_passed=parity.get("passed") if isinstance(parity, dict) else None,
    )


def _version_key(version: str) -> tuple[int, ...]:
    parts = version.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else ()
