"""What was saved in a folder: the artifacts that have a jupyter_modelsave manifest beside them.

One bad manifest never hides the others: a manifest that cannot be read (not JSON, nested too
deeply, too big, not a regular file) or whose fields have the wrong types or values (a version
that is not ``X.Y.Z``, a size that is not a non-negative integer, ...) is skipped, and the
reason is added to the result's ``problems`` list. ``list_artifacts`` raises only when the
folder itself is not a folder.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidOptionError, ModelSaveError
from .manifest import parse_manifest

_VERSION = re.compile(r"^(\d{1,9})\.(\d{1,9})\.(\d{1,9})$", re.ASCII)


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


class ArtifactList(list):
    """The artifacts found (a list of ``ArtifactInfo``), plus ``problems``: one line per
    manifest that was skipped, saying which and why."""

    problems: list[str]

    def __init__(self, found: list[ArtifactInfo], problems: list[str]) -> None:
        super().__init__(found)
        self.problems = problems


def list_artifacts(folder: str | Path) -> ArtifactList:
    """The artifacts in ``folder``, newest first (by creation time, then version).

    An artifact counts when its ``<artifact>.json`` manifest was written by jupyter_modelsave and
    the artifact is still there; other files are ignored. Manifests that claim to be
    jupyter_modelsave's but cannot be read or hold wrong values are skipped and listed in the
    result's ``problems``; this never raises for what is inside the folder.
    """
    try:
        folder = Path(folder).expanduser()
        is_folder = folder.is_dir()
    except (TypeError, ValueError, OSError):
        is_folder = False
    if not is_folder:
        raise InvalidOptionError(f"{folder!r} is not a folder; pass the folder you wrote to.")
    found: list[ArtifactInfo] = []
    problems: list[str] = []
    for manifest in _manifests(folder):
        try:
            info = _info(manifest)
        except ModelSaveError as err:
            problems.append(f"{manifest.name}: {err}")
            continue
        if info is not None:
            found.append(info)
    found.sort(key=lambda i: (i.created, _version_key(i.version), i.path.name), reverse=True)
    return ArtifactList(found, problems)


def _manifests(folder: Path) -> list[Path]:
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [folder / n for n in sorted(names) if n.endswith(".json") and not n.startswith(".")]


def _info(manifest: Path) -> ArtifactInfo | None:
    """The artifact a manifest describes; None for JSON files that are not manifests."""
    artifact = manifest.with_name(manifest.name.removesuffix(".json"))
    if not os.path.lexists(artifact) and not os.path.exists(artifact):
        return None  # a JSON file of someone else's, or an artifact removed since
    data = parse_manifest(manifest)
    if data.get("producer") != "jupyter_modelsave":
        return None
    parity = data.get("parity")
    return ArtifactInfo(
        path=artifact,
        name=_field(data, "name", str),
        version=_version(data.get("version")),
        format=_field(data, "format", str),
        sha256=_field(data, "sha256", str),
        size_bytes=_size(data.get("size_bytes")),
        created=_field(data, "created", str),
        parity_passed=_parity(parity),
    )


def _field(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data.get(key, "")
    if not isinstance(value, kind):
        raise InvalidOptionError(f"its {key!r} is {type(value).__name__}, not {kind.__name__}")
    return value


def _version(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidOptionError(
            f"its version is {type(value).__name__}, not a string like '1.2.3'"
        )
    if not _VERSION.match(value):
        raise InvalidOptionError(f"its version {value[:40]!r} is not like '1.2.3'")
    return value


def _size(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOptionError(f"its size_bytes is {type(value).__name__}, not a number")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise InvalidOptionError(f"its size_bytes {value!r} is not a whole number")
    if value < 0 or value >= 2**63:  # (a huge int is not printed: str() of it can fail)
        raise InvalidOptionError("its size_bytes is negative or beyond any file size")
    return int(value)


def _parity(parity: Any) -> bool | None:
    if parity is None:
        return None
    passed = parity.get("passed") if isinstance(parity, dict) else "?"
    if passed is not None and not isinstance(passed, bool):
        raise InvalidOptionError("its parity.passed is not true, false or null")
    return passed


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))
