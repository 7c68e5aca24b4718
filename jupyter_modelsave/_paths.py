"""The staging folder shared by the kernel side (which writes) and the server extension (which serves).

The kernel and the Jupyter server run on the same machine, as the same user. The server extension
owns the location (``ModelSave.staging_dir``, default ``<tempdir>/jupyter_modelsave-<user>/staging``)
and tells the sidebar, which passes it to the kernel side when it installs it. Each staged export
is published as ``<staging_dir>/<id>/`` with an ``index.json`` naming its files and the process
that owns it; ``<id>`` is ``secrets.token_hex(16)`` (128 random bits), the only thing the browser
ever sends back.

Privacy: the staging folder (and, for the default location, its per-user parent) is mode 0700 and
must belong to the current user; every published file is created with mode 0600 before any byte is
written (``open_private``), whatever the umask.

Stale exports: a published folder is stale when the process named in its ``index.json`` is no
longer running, or when it has no ``index.json`` at all (its kernel was killed before publishing
anything). The server removes stale folders when it starts (``remove_stale``); kernels remove their
own on discard, on Comm close and at exit.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Any

from .core.artifacts import copy_tree, pid_alive
from .core.errors import WriteError

INDEX_FILE = "index.json"
STAGING_ID_BYTES = 16  # 128 random bits
STAGING_ID = re.compile(rf"^[0-9a-f]{{{2 * STAGING_ID_BYTES}}}$")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)


class StagingFolderError(WriteError, PermissionError):
    """The staging folder is not private to this user (another user's, or a symlink to one)."""


def new_staging_id() -> str:
    """A fresh staging id: 128 bits from the OS's CSPRNG, as 32 lowercase hex digits."""
    return secrets.token_hex(STAGING_ID_BYTES)


def default_staging_dir() -> Path:
    """``<tempdir>/jupyter_modelsave-<user>/staging``: per user, so users of one machine never mix."""
    try:
        user = re.sub(r"[^\w.-]", "_", getpass.getuser())
    except (KeyError, OSError):  # no name for this uid (containers)
        user = "user"
    return Path(tempfile.gettempdir()) / f"jupyter_modelsave-{user}" / "staging"


def private_dir(path: str | Path) -> Path:
    """Create ``path`` (mode 0700) or check an existing one; return it. Refuses a folder that
    belongs to another user; tightens the mode of one of ours to 0700. For the default location
    the per-user parent in the shared temp folder gets the same treatment."""
    path = Path(path)
    if path == default_staging_dir():
        _private_one(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _private_one(path)


def _private_one(path: Path) -> Path:
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise StagingFolderError(f"{path} is not a folder; remove it or set ModelSave.staging_dir.")
    if hasattr(os, "getuid"):
        if info.st_uid != os.getuid():
            raise StagingFolderError(
                f"{path} belongs to another user; remove it or set c.ModelSave.staging_dir to a "
                "folder of yours."
            )
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(path, 0o700)
    return path


def open_private(path: str | Path) -> IO[bytes]:
    """A new file opened for writing, mode 0600 from its creation (umask-independent); refuses
    to follow a symlink or to reuse an existing name."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY
    fd = os.open(path, flags, 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # the umask may have removed bits; never adds them
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def mkdir_private(path: Path) -> None:
    """A new folder, mode 0700 whatever the umask."""
    os.mkdir(path, 0o700)
    os.chmod(path, 0o700)  # the umask may have removed bits; never adds them


def publish_tree(source: Path, target: Path) -> None:
    """Publish a staged file or folder artifact as ``target``: folders 0700, files 0600."""
    copy_tree(source, target, publish_file, mkdir_private)


def publish_file(source: Path, target: Path) -> None:
    """A hard link when the staged file is already private (mode 0600), else a 0600 copy.

    A link shares the file's mode, so a staged file with wider permissions is copied instead:
    the published name never refers to bytes that other users could read.
    """
    info = source.stat()
    if info.st_mode & 0o777 == 0o600:
        try:
            os.link(source, target)
            return
        except OSError:  # another file system, or links not allowed
            pass
    with open(source, "rb") as src, open_private(target) as dst:
        _copy_bytes(src, dst, info.st_size)


def _copy_bytes(src: Any, dst: Any, size: int) -> None:
    """Copy in the kernel where the OS can (``copy_file_range``: no user-space buffer, a
    copy-on-write clone on file systems that have them), else through a buffer."""
    copied = 0
    if hasattr(os, "copy_file_range"):
        # not supported between these files (OSError): fall back from where it stopped
        with contextlib.suppress(OSError):
            source, target = src.fileno(), dst.fileno()
            while copied < size and (step := os.copy_file_range(source, target, size - copied)):
                copied += step
    src.seek(copied)
    dst.seek(copied)
    shutil.copyfileobj(src, dst, 1 << 20)


def write_private(path: str | Path, data: bytes) -> None:
    """Write ``data`` atomically to ``path`` (a 0600 temporary renamed over it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open_private(tmp) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_index(folder: Path) -> dict[str, Any] | None:
    """A published folder's ``index.json``, or None when it has none (or an unreadable one)."""
    try:
        index = json.loads((folder / INDEX_FILE).read_text())
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) else None


def process_running(pid: Any) -> bool:
    """Whether a process with this id is running (on this machine)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with ipykernel
        return os.name == "nt" or pid_alive(pid)  # Windows: no safe probe, keep the folder
    return psutil.pid_exists(pid)


def remove_stale(staging_dir: str | Path) -> list[str]:
    """Delete published exports whose owning process is gone; return their ids. Only folders
    named like a staging id are considered; anything else in the folder is left alone."""
    removed = []
    try:
        entries = list(os.scandir(staging_dir))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not STAGING_ID.match(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        index = read_index(Path(entry.path))
        if index is None or not process_running(index.get("pid")):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.name)
    return removed
