"""What the server extension's file routes may serve: paths kept inside their folder, and below the
Jupyter root only the artifacts that jupyter_modelsave wrote.

``written_artifact`` is the rule of ``/modelsave/download/<path>``. A path below the root is served
when it is

- a **file artifact**: a file with a manifest ``<file>.json`` beside it whose ``producer`` is
  ``"jupyter_modelsave"`` and whose ``sha256`` is the file's (hashed once per size and mtime; the
  route sends that hash as ``X-Content-SHA256`` anyway);
- a **folder artifact**: a folder with such a manifest whose ``files`` lists exactly the folder's
  files (the files are not re-hashed before the zip streams: the manifest's per-file hashes let
  the receiver check them);
- the **manifest** ``<artifact>.json`` of one of those.

A manifest is read only if it is a regular file inside the root of at most
``MAX_MANIFEST_BYTES``; it describes the artifact it sits beside, never a path it names.
Anything else is refused (``NotAnArtifactError``, 403; a file that no longer matches its manifest,
``IntegrityError``, 409). Hidden paths (a component starting with '.', or hidden by the OS, as
jupyter_core's ``is_hidden`` decides; checked for the path as asked and as resolved) are
answered as missing (404) unless ``ContentsManager.allow_hidden``, as Jupyter's ``/files/`` does.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_core.paths import is_hidden

from .core.errors import IntegrityError

PRODUCER = "jupyter_modelsave"
MAX_MANIFEST_BYTES = 16 << 20
# errors of a path that cannot name a served file: answered as "does not exist"
_NO_SUCH_PATH = (errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EILSEQ)


class OutsideError(PermissionError):
    """A path that leaves the folder it must stay in."""


class NotAnArtifactError(PermissionError):
    """A path below the root that is not an artifact written by jupyter_modelsave."""


def inside(folder: Path, relative: str, *, folders: bool = False) -> Path:
    """``folder/relative`` with symlinks resolved; refuses absolute paths, ``..`` and escapes.

    A folder is refused unless ``folders``. NUL bytes and backslashes are refused too, so a path
    means the same on every OS. A path the OS cannot look up (too long, a symlink loop, not
    encodable) is ``FileNotFoundError``.
    """
    if "\x00" in relative or "\\" in relative:
        raise OutsideError(f"{relative!r} is refused: NUL bytes and backslashes are not allowed.")
    if not relative or Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise OutsideError(
            f"{relative!r} is refused: paths outside the served folder are not allowed."
        )
    root = folder.resolve()
    path = _looked_up(relative, lambda: (root / relative).resolve())
    if not path.is_relative_to(root):
        raise OutsideError(f"{relative!r} points outside the served folder.")
    if not _looked_up(relative, path.exists):
        raise _missing(relative)
    if path.is_dir() and not folders:
        raise NotAnArtifactError(f"{relative!r} is a folder, not an artifact.")
    return path


def _looked_up(relative: str, look_up: Callable[[], Any]) -> Any:
    """``look_up()``, with the errors of a path that names nothing turned into a 404."""
    try:
        return look_up()
    except (RuntimeError, UnicodeEncodeError):  # a symlink loop (Python < 3.13), a lone surrogate
        raise _missing(relative) from None
    except OSError as err:
        if err.errno in _NO_SUCH_PATH:
            raise _missing(relative) from None
        raise


def _missing(relative: str) -> FileNotFoundError:
    return FileNotFoundError(f"{relative[:200]!r} does not exist.")


def written_artifact(
    root_dir: str | Path, relative: str, *, allow_hidden: bool, sha256: Callable[[Path], str]
) -> Path:
    """The artifact (or manifest) ``relative`` names below ``root_dir``; see the module docstring.

    ``sha256`` hashes a file (the route's cached hash).
    """
    root = Path(root_dir).absolute()
    path = inside(root, relative, folders=True)
    if not allow_hidden and _looked_up(relative, lambda: _hidden(root, relative, path)):
        raise _missing(relative)
    if _describes(path, sha256):
        return path
    if path.name.endswith(".json") and path.is_file():
        artifact = path.with_name(path.name.removesuffix(".json"))
        if artifact.exists() and _describes(artifact, sha256) and _manifest_path(artifact) == path:
            return path
    raise NotAnArtifactError(
        f"{relative[:200]!r} is not an artifact written by jupyter_modelsave (no manifest of ours "
        "beside it describes it); this route serves only those. Download other files from the "
        "file browser."
    )


def _hidden(root: Path, relative: str, resolved: Path) -> bool:
    """Hidden as asked (``root/relative``) or as resolved (a visible link to a hidden file)."""
    asked = root / relative
    return is_hidden(str(asked), str(root)) or is_hidden(str(resolved), str(root.resolve()))


def _manifest_path(artifact: Path) -> Path:
    return artifact.with_name(f"{artifact.name}.json")


def _describes(artifact: Path, sha256: Callable[[Path], str]) -> bool:
    """Whether a manifest of ours beside ``artifact`` describes it; raises ``IntegrityError`` when
    the manifest is ours but the artifact has changed since."""
    manifest = read_manifest(_manifest_path(artifact), artifact.parent)
    if manifest is None:
        return False
    if artifact.is_dir():
        listed = manifest.get("files")
        actual = {p.relative_to(artifact).as_posix() for p in artifact.rglob("*") if p.is_file()}
        if not isinstance(listed, dict) or set(listed) != actual:
            raise IntegrityError(
                f"The files of {artifact.name!r} differ from its manifest's list: it was changed "
                "after it was written; it is not served."
            )
        return True
    if not artifact.is_file():
        return False
    if manifest.get("sha256") != sha256(artifact):
        raise IntegrityError(
            f"{artifact.name!r} does not match the sha256 of its manifest: it was changed after "
            "it was written; it is not served."
        )
    return True


def read_manifest(path: Path, folder: Path) -> dict[str, Any] | None:
    """The manifest at ``path`` if it is one of ours (a regular file in ``folder``), else None."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        if path.resolve().parent != folder.resolve():
            return None
        manifest = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(manifest, dict) or manifest.get("producer") != PRODUCER:
        return None
    return manifest
