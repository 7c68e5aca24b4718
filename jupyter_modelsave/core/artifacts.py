"""Writing a staged artifact: versioned names, free-space check, atomic rename, manifest.

A write links (or, across filesystems, copies) the staged file or folder to a hidden temporary
name in the destination folder and writes the manifest ``<artifact>.json`` to another, fsyncs
both, then, under an exclusive lock on the folder, renames the artifact into place and the
manifest last. So a crash leaves no artifact or a whole one, an error (disk full, read-only)
leaves the folder as it was, and two concurrent writers never mix their files. A version picked
automatically (a folder destination) is picked again under that lock, so concurrent writers of
one name get distinct versions. Temporaries left by a process that died are removed by the next
write to that folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ArtifactExistsError, InvalidOptionError, ModelSaveError, WriteError, shown
from .hashing import sha256_of, size_of

DEFAULT_VERSION = "1.0.0"
TMP_MARK = ".jms-tmp-"
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def check_version(version: Any) -> str:
    if not isinstance(version, str) or not _VERSION.match(version):
        raise InvalidOptionError(f"version must look like '1.2.3', got {shown(version)}.")
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
    with contextlib.suppress(FileNotFoundError):
        return os.listdir(folder)
    return []


def is_folder_destination(dest: Path | str, extension: str = "") -> bool:
    """A path ending in ``/``, or an existing folder that is not itself a folder artifact.

    An existing folder named ``*<extension>`` (``model.onnx/`` with external data, sharded
    ``model.safetensors/``) is the artifact to replace, never a folder to write into.
    """
    text = str(dest)
    if text.endswith(("/", os.sep)):
        return True
    return Path(text).is_dir() and not (extension and text.endswith(extension))


@dataclass(frozen=True)
class AutoVersion:
    """A versioned name in a folder whose version is picked when the artifact is committed."""

    name: str
    sha256: str
    extension: str

    def path(self, folder: Path, version: str) -> Path:
        return folder / f"{self.name}_v{version}_{self.sha256[:12]}{self.extension}"


def destination_path(
    dest: Path | str, name: str, version: str | None, sha256: str, extension: str
) -> tuple[Path, str, AutoVersion | None]:
    """The artifact path, its version, and (when the version is picked automatically) how to
    pick it again at commit time. Folders get ``<name>_v<version>_<sha12><ext>``."""
    text = os.path.expanduser(str(dest))  # ``options.check_destination`` refused NUL bytes
    dest = Path(text)
    if not is_folder_destination(text, extension):
        return dest, version or DEFAULT_VERSION, None
    auto = AutoVersion(name, sha256, extension) if version is None else None
    version = check_version(version) if version is not None else next_version(dest, name, extension)
    return dest / f"{name}_v{version}_{sha256[:12]}{extension}", version, auto


def write_artifact(
    staged: Path,
    target: Path,
    manifest: dict[str, Any],
    *,
    overwrite: bool,
    auto: AutoVersion | None = None,
) -> Path:
    """Copy ``staged`` to ``target`` atomically, then its manifest ``<target>.json``.

    Both are written in full under temporary names first; only then, holding the folder's lock,
    is the artifact renamed into place and the manifest after it. With ``auto`` the version is
    picked again under that lock (a writer that committed meanwhile took the one expected), and
    the name and manifest follow it. Any error leaves the folder as it was (a previous version
    included) and raises ``WriteError`` or ``ArtifactExistsError``. Returns the final path.
    """
    folder = target.parent
    manifest_path = Path(f"{target}.json")
    _prepare_folder(folder)
    with _folder_lock(folder):
        clean_stale_temporaries(folder)
    if not overwrite:
        _refuse_existing(target, manifest_path, racing=False)
    _check_space(staged, folder)
    tmp, tmp_manifest = _temporary(target), _temporary(manifest_path)
    try:
        (_copy_tree if staged.is_dir() else _copy_file)(staged, tmp)
        _write_bytes(_manifest_bytes(manifest), tmp_manifest)
        with _folder_lock(folder):
            version = next_version(folder, auto.name, auto.extension) if auto else None
            if version is not None and version != manifest.get("version"):
                target = auto.path(folder, version)
                manifest_path = Path(f"{target}.json")
                _remove(tmp_manifest)  # small: rewritten under the lock with the new version
                tmp_manifest = _temporary(manifest_path)
                _write_bytes(_manifest_bytes({**manifest, "version": version}), tmp_manifest)
            _commit(tmp, target, tmp_manifest, manifest_path, overwrite=overwrite)
    except OSError as err:
        if isinstance(err, ModelSaveError):
            raise
        raise WriteError(err.errno, _explain(err, target)) from err
    finally:  # no-ops once renamed into place
        _remove(tmp)
        _remove(tmp_manifest)
    return target


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True).encode()


def _refuse_existing(target: Path, manifest_path: Path, *, racing: bool) -> None:
    for existing in (target, manifest_path):
        if os.path.lexists(existing):
            if racing:
                raise ArtifactExistsError(
                    f"{existing} was written by another writer while this one was writing; "
                    "nothing was overwritten. Write again to get the next version, or pass "
                    "overwrite=True to replace it."
                )
            raise ArtifactExistsError(
                f"{existing} already exists. Pass overwrite=True to replace it, or write to a "
                "folder (a path ending in '/') to get a new versioned name."
            )


def _check_space(staged: Path, folder: Path) -> None:
    needed = size_of(staged) + 64 * 1024
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise WriteError(
            errno.ENOSPC,
            f"Not enough space in {folder}: the artifact needs {needed:,} bytes, {free:,} are free. "
            "Free some space or choose another destination.",
        )


def _explain(err: OSError, target: Path) -> str:
    why = {
        errno.ENOSPC: "the disk is full. Free some space or choose another destination",
        errno.EDQUOT: "the disk quota is exceeded. Free some space or choose another destination",
        errno.EROFS: "the filesystem is read-only. Choose a writable destination",
        errno.EACCES: "permission denied. Choose a folder you can write to",
        errno.EPERM: "permission denied. Choose a folder you can write to",
    }.get(err.errno, f"{err.strerror or err}. Check the folder's permissions and free space")
    return f"Could not write {target}: {why}. Nothing was left behind; any previous version is unchanged."


def _prepare_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(err.errno, f"Cannot create the folder {folder}: {err.strerror}.") from err
    if hasattr(os, "statvfs") and os.statvfs(folder).f_flag & os.ST_RDONLY:
        raise WriteError(
            errno.EROFS,
            f"The folder {folder} is on a read-only filesystem. Choose a writable destination.",
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise WriteError(
            errno.EACCES, f"The folder {folder} is not writable. Choose a folder you can write to."
        )


def _temporary(target: Path, tag: str = "") -> Path:
    """A hidden name beside ``target`` that names this process (see ``clean_stale_temporaries``)."""
    return target.parent / f".{target.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{tag}"


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the folder, between processes and threads alike.

    Held only while renaming (never while copying). Where the filesystem has no locks the
    renames are still atomic one by one.
    """
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        yield
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _commit(
    tmp: Path, target: Path, tmp_manifest: Path, manifest_path: Path, *, overwrite: bool
) -> None:
    """Rename the artifact, then its manifest, into place (the folder's lock is held).

    At every instant a manifest present beside the artifact describes it: when replacing, the
    old manifest is set aside before the artifact is swapped, and restored if the swap fails.
    """
    set_aside = None
    if not overwrite:
        _refuse_existing(target, manifest_path, racing=True)
        _rename_new(tmp, target)
    else:
        if os.path.lexists(manifest_path):
            set_aside = _temporary(manifest_path, "-old")
            os.rename(manifest_path, set_aside)
        try:
            _swap_in(tmp, target)
        except BaseException:
            if set_aside is not None:
                os.rename(set_aside, manifest_path)
            raise
    os.replace(tmp_manifest, manifest_path)
    _fsync_file(target.parent, os.O_DIRECTORY)
    if set_aside is not None:
        _remove(set_aside)


def _rename_new(tmp: Path, target: Path) -> None:
    """Rename to a name that must not exist; a file is linked, which never clobbers."""
    if tmp.is_dir():
        os.rename(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise ArtifactExistsError(
            f"{target} was created by someone else while writing; nothing was overwritten."
        ) from None
    os.unlink(tmp)


def _swap_in(tmp: Path, target: Path) -> None:
    """Replace ``target`` by ``tmp`` in one step: ``rename`` for a file, an exchange for a folder."""
    if not (target.is_dir() and not target.is_symlink()):
        if tmp.is_dir() and os.path.lexists(target):
            _remove(target)  # a file or link where a folder artifact goes
        os.replace(tmp, target)
        return
    if not _exchange(tmp, target):  # no RENAME_EXCHANGE here: two renames, a short gap
        old = _temporary(target, "-old")
        os.rename(target, old)
        os.rename(tmp, target)
        os.rename(old, tmp)
    _remove(tmp)  # now the old version


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _copy_file(source: Path, tmp: Path) -> None:
    """A hard link when the staging folder shares the destination's filesystem, else a copy.

    A link costs no I/O, so writing a staged export is as fast as renaming it; the staged file
    and the written one are then the same inode until the staged one is discarded.
    """
    try:
        os.link(source, tmp)
    except OSError:  # another filesystem, or links refused: copy the bytes
        shutil.copyfile(source, tmp)
    _fsync_file(tmp)


def _copy_tree(source: Path, tmp: Path) -> None:
    """Link or copy a folder artifact file by file, then fsync its folders."""
    for folder in reversed(copy_tree(source, tmp, _copy_file)):
        _fsync_file(folder, os.O_DIRECTORY)


def copy_tree(source: Path, target: Path, copy_file: Callable[[Path, Path], None],
              make_dir: Callable[[Path], None] = os.mkdir) -> list[Path]:  # fmt: skip
    """``copy_file`` for a file artifact; for a folder artifact, its tree: ``make_dir`` for each
    folder before what it holds, ``copy_file`` for each file. Returns the folders made; the
    first error is raised as it is."""
    if not source.is_dir():
        copy_file(source, target)
        return []
    folders = [target]
    make_dir(target)
    for src in sorted(source.rglob("*")):  # a folder sorts before what it holds
        dst = target / src.relative_to(source)
        if src.is_dir():
            make_dir(dst)
            folders.append(dst)
        else:
            copy_file(src, dst)
    return folders


def _write_bytes(data: bytes, tmp: Path) -> None:
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_file(path: Path, flags: int = 0) -> None:
    """fsync a file, or a folder with ``flags=os.O_DIRECTORY``."""
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):  # already gone, or a read-only folder: best effort
            path.unlink()


def clean_stale_temporaries(folder: Path) -> list[Path]:
    """Finish or undo the writes of processes that died, then remove their temporaries.

    A dead writer's temporary goes back under its own name when that name is missing and it is
    whole: a folder artifact it had set aside to replace it, or a manifest that matches the
    artifact now in place (the old one, or the new one the writer had just renamed). Everything
    else it left is removed. Returns what was removed.
    """
    stale = [e for e in _listdir(folder) if TMP_MARK in e and not _writer_alive(e)]
    removed = []
    # artifacts first: a manifest goes back only beside the artifact it describes
    for entry in sorted(stale, key=lambda e: _original_name(e).endswith(".json")):
        if not _put_back(folder / entry, folder / _original_name(entry)):
            _remove(folder / entry)
            removed.append(folder / entry)
    return removed


def _original_name(entry: str) -> str:
    return entry[1:].rsplit(TMP_MARK, 1)[0]


def _writer_alive(entry: str) -> bool:
    pid = entry.rsplit(TMP_MARK, 1)[1].split("-", 1)[0]
    return not pid.isdigit() or pid_alive(int(pid))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _put_back(tmp: Path, original: Path) -> bool:
    if os.path.lexists(original):
        return False
    if original.name.endswith(".json"):
        artifact = original.with_name(original.name.removesuffix(".json"))
        if not artifact.exists() or _recorded_sha256(tmp) != sha256_of(artifact):
            return False
    elif not (tmp.name.endswith("-old") and tmp.is_dir()):  # a copy may be cut short
        return False
    try:
        os.rename(tmp, original)
    except OSError:
        return False
    return True


def _recorded_sha256(manifest: Path) -> str | None:
    try:
        value = json.loads(manifest.read_bytes()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
