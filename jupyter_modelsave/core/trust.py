"""Which artifacts are this user's own: an HMAC-SHA256 signature under a per-user secret key.

As Jupyter trusts the notebooks you wrote (nbformat's ``sign.py``), jupyter_modelsave trusts the
artifacts you wrote: every manifest it writes (and every ``jms.to_base64`` string) carries
``hmac-sha256:<hex>`` of the artifact's sha256 and its format, under a secret key that only this
user can read. ``jms.load``, ``load_into`` and ``from_base64`` treat an artifact whose signature
verifies as trusted, without ``trusted=True``. A sha256 alone proves only that the bytes were not
changed, never who made them: whoever ships an artifact can ship a manifest with its sha256.

The signed message binds the sha256 (so the bytes) and the format (so the loader); the file's
name and the model's name are left out, so renaming or moving your own artifact keeps it trusted.

The key is 64 random bytes in ``<jupyter data dir>/jupyter_modelsave_secret`` (mode 0600, created
on the first signature), or in the file named by ``$JUPYTER_MODELSAVE_SECRET_FILE``. A key file
that other users can read, or that belongs to someone else, is not used: nothing is signed with
it and no signature made with it is believed (a warning says why).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import warnings
from pathlib import Path

SECRET_ENV = "JUPYTER_MODELSAVE_SECRET_FILE"
SECRET_NAME = "jupyter_modelsave_secret"
SCHEME = "hmac-sha256"
_KEY_BYTES = 64


def secret_path() -> Path:
    """Where this user's key lives: ``$JUPYTER_MODELSAVE_SECRET_FILE``, else Jupyter's data dir."""
    override = os.environ.get(SECRET_ENV)
    if override:
        return Path(override).expanduser()
    try:
        from jupyter_core.paths import jupyter_data_dir
    except ImportError:  # a kernel without Jupyter installed: Jupyter's default on Linux
        return Path.home() / ".local" / "share" / "jupyter" / SECRET_NAME
    return Path(jupyter_data_dir()) / SECRET_NAME


def sign(sha256: str, format: str) -> str | None:
    """``hmac-sha256:<hex>`` of an artifact (its sha256 and format), creating the key if needed.

    None when no usable key can be had (the artifact is then written unsigned, with a warning).
    """
    key = _key(create=True)
    return None if key is None else f"{SCHEME}:{_mac(key, sha256, format)}"


def is_signed(sha256: str, format: str, signature: object) -> bool:
    """Whether ``signature`` was made with this user's key for exactly this sha256 and format."""
    if not isinstance(signature, str) or not signature.startswith(f"{SCHEME}:"):
        return False
    key = _key(create=False)
    if key is None:
        return False
    expected = _mac(key, sha256, format)
    given = signature.removeprefix(f"{SCHEME}:").encode("utf-8", "replace")
    return hmac.compare_digest(given, expected.encode())


def _mac(key: bytes, sha256: str, format: str) -> str:
    message = f"jupyter_modelsave artifact v1\nformat {format}\nsha256 {sha256}\n".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _key(create: bool) -> bytes | None:
    path = secret_path()
    try:
        return _read_key(path)
    except FileNotFoundError:
        if not create:
            return None
    try:
        _create_key(path)
        return _read_key(path)
    except OSError as err:
        _warn(f"jupyter_modelsave cannot create its signing key {path} ({err}); artifacts are "
              "written unsigned, and loading them needs trusted=True.")  # fmt: skip
        return None


def _read_key(path: Path) -> bytes | None:
    """The key in ``path``; None (and a warning) when the file is not private to this user."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        info = os.fstat(fd)
        key = os.read(fd, 4096)
    finally:
        os.close(fd)
    owner_ok = not hasattr(os, "geteuid") or info.st_uid == os.geteuid()
    if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077 or not owner_ok:
        _warn(f"The signing key {path} is readable by other users or not yours, so it signs "
              "nothing and no signature made with it is believed. Remove it (a new one is "
              "made on the next write) or chmod 600 it.")  # fmt: skip
        return None
    return key if len(key) >= 32 else None  # else empty or cut (a writer died creating it)


def _create_key(path: Path) -> None:
    """Write a new key atomically: a private temporary file, linked to ``path`` only if absent."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, secrets.token_bytes(_KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # another process may have made one meanwhile: keep theirs
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)
