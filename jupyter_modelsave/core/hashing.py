"""The sha256 of an artifact: of its one file, or of a folder's files (``sha256sum``-style listing).

The manifest records both the artifact's sha256 and each file's; ``jms.load`` checks the first.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    """sha256 of a file; of a folder, sha256 over its ``sha256sum``-style listing (sorted)."""
    return combined_sha256(path, file_hashes(path))


def file_hashes(path: Path) -> dict[str, str]:
    """sha256 of each file of an artifact, by its path relative to the artifact's folder."""
    if not path.is_dir():
        return {path.name: sha256_file(path)}
    return {f.relative_to(path).as_posix(): sha256_file(f) for f in artifact_files(path)}


def combined_sha256(path: Path, hashes: dict[str, str]) -> str:
    """The artifact's sha256 from its files' hashes (see ``sha256_of``)."""
    if not path.is_dir():
        return hashes[path.name]
    listing = "".join(f"{digest}  {name}\n" for name, digest in sorted(hashes.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 of one file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    return (
        sum(f.stat().st_size for f in artifact_files(path))
        if path.is_dir()
        else path.stat().st_size
    )


def artifact_files(folder: Path) -> list[Path]:
    """The files below ``folder``, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file())
