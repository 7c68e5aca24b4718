"""Writing a staged artifact: versioned names, sha256, free-space check, atomic rename, manifest.

A write links (or, across filesystems, copies) the staged file or folder to a hidden temporary
name in the destination folder, fsyncs it, then renames it into place, so a crash leaves either
no artifact or a whole one. The manifest ``<artifact>.json`` is written the same way, last.
Temporaries left by a process that died are removed by the next write to that folder.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from .errors import ArtifactExistsError, InvalidOptionError, WriteError

DEFAULT_VERSION = "1.0.0"
TMP_MARK = ".jms-tmp-"
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    """sha256 of a file; of a folder, sha256 over its ``sha256sum``-style listing (sorted)."""
    return combined_sha256(path, file_hashes(path))


def file_hashes(path: Path) -> dict[str, str]:
    """sha256 of each file of an artifact, by its path relative to the artifact's folder."""
    if not path.is_dir():
        return {path.name: _sha256_file(path)}
    return {f.relative_to(path).as_posix(): _sha256_file(f) for f in _files(path)}


def combined_sha256(path: Path, hashes: dict[str, str]) -> str:
    """The artifact's sha256 from its files' hashes (see ``sha256_of``)."""
    if not path.is_dir():
        return hashes[path.name]
    listing = "".join(f"{digest}  {name}\n" for name, digest in sorted(hashes.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in _files(path)) if path.is_dir() else path.stat().st_size


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def check_version(version: Any) -> str:
    if not isinstance(version, str) or not _VERSION.match(version):
        raise InvalidOptionError(f"version must look like '1.2.3', got {version!r}.")
    return version


def next_version(folder: Path, name: str, extension: str) -> str:
    """1.0.0 for a new name; else the highest existing ``<name>_v<X.Y.Z>_*`` with patch + 1."""
    pattern = re.compile(
        rf"^{re.escape(name)}_v(\d+)\.(\d+)\.(\d+)_[0-9a-f]{{12}}{re.escape(extension)}$"
    )
    found = [tuple(map(int, m.groups())) for p in _listdir(folder) if (m := pattern.match(p))]
    if not found:
        return DEFAULT_VERSION
    major, minor, patch = max(found)
    return f"{major}.{minor}.{patch + 1}"


def _listdir(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def is_folder_destination(dest: Path | str) -> bool:
    return str(dest).endswith(("/", os.sep)) or Path(dest).is_dir()


def destination_path(
    dest: Path | str, name: str, version: str | None, sha256: str, extension: str
) -> tuple[Path, str]:
    """The final artifact path and its version. Folders get ``<name>_v<version>_<sha12><ext>``."""
    text = os.path.expanduser(str(dest))
    if "\x00" in text:
        raise InvalidOptionError("The destination path contains a NUL byte.")
    dest = Path(text)
    if not is_folder_destination(text):
        return dest, version or DEFAULT_VERSION
    version = check_version(version) if version is not None else next_version(dest, name, extension)
    return dest / f"{name}_v{version}_{sha256[:12]}{extension}", version


def write_artifact(
    staged: Path, target: Path, manifest: dict[str, Any], *, overwrite: bool
) -> Path:
    """Copy ``staged`` to ``target`` atomically, then its manifest ``<target>.json``."""
    folder = target.parent
    manifest_path = Path(f"{target}.json")
    _prepare_folder(folder)
    clean_stale_temporaries(folder)
    if not overwrite:
        for existing in (target, manifest_path):
            if existing.exists():
                raise ArtifactExistsError(
                    f"{existing} already exists. Pass overwrite=True to replace it, or write to a "
                    "folder (a path ending in '/') to get a new versioned name."
                )
    needed = size_of(staged) + 64 * 1024
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise WriteError(
            errno.ENOSPC,
            f"Not enough space in {folder}: the artifact needs {needed:,} bytes, {free:,} are free. "
            "Free some space or choose another destination.",
        )
    try:
        _place(
            staged, target, overwrite=overwrite, copy=_copy_tree if staged.is_dir() else _copy_file
        )
        text = json.dumps(manifest, indent=2, sort_keys=True).encode()
        _place(text, manifest_path, overwrite=True, copy=_write_bytes)
    except ArtifactExistsError:
        raise
    except OSError as err:
        raise WriteError(
            err.errno,
            f"Could not write {target}: {err.strerror or err}. Check the folder's permissions and free space.",
        ) from err
    return target


def _prepare_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(err.errno, f"Cannot create the folder {folder}: {err.strerror}.") from err
    if not os.access(folder, os.W_OK | os.X_OK):
        raise WriteError(
            errno.EACCES, f"The folder {folder} is not writable. Choose a folder you can write to."
        )


def _place(source: Any, target: Path, *, overwrite: bool, copy: Any) -> None:
    """Write ``source`` under a temporary name beside ``target``, fsync, rename into place."""
    tmp = target.parent / f".{target.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        copy(source, tmp)
        if overwrite or tmp.is_dir():
            if overwrite and target.is_dir():
                _replace_folder(tmp, target)
            else:
                os.rename(tmp, target) if tmp.is_dir() else os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # fails if target appeared meanwhile: never clobber
            except FileExistsError:
                raise ArtifactExistsError(
                    f"{target} was created by someone else while writing; nothing was overwritten."
                ) from None
            os.unlink(tmp)
        _fsync_dir(target.parent)
    except BaseException:
        _remove(tmp)
        raise


def _replace_folder(new: Path, target: Path) -> None:
    old = target.parent / f".{target.name}{TMP_MARK}{os.getpid()}-old"
    os.rename(target, old)
    os.rename(new, target)
    _remove(old)


def _link_or_copy(source: Path | str, tmp: Path | str) -> None:
    """A hard link when the staging folder shares the destination's filesystem, else a copy.

    A link costs no I/O, so writing a staged export is as fast as renaming it; the staged file
    and the written one are then the same inode until the staged one is discarded.
    """
    try:
        os.link(source, tmp)
    except OSError:  # another filesystem, or links refused: copy the bytes
        shutil.copyfile(source, tmp)


def _copy_file(source: Path, tmp: Path) -> None:
    _link_or_copy(source, tmp)
    _fsync_file(tmp)


def _copy_tree(source: Path, tmp: Path) -> None:
    shutil.copytree(source, tmp, copy_function=_link_or_copy)
    for f in _files(tmp):
        _fsync_file(f)
    _fsync_dir(tmp)


def _write_bytes(data: bytes, tmp: Path) -> None:
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def clean_stale_temporaries(folder: Path) -> list[Path]:
    """Remove temporaries whose writing process no longer runs. Returns what was removed."""
    removed = []
    for entry in _listdir(folder):
        if TMP_MARK not in entry:
            continue
        pid = entry.rsplit(TMP_MARK, 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(folder / entry)
            removed.append(folder / entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
