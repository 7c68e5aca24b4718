"""Reading an artifact's ``<artifact>.json`` manifest, whoever wrote it.

A manifest is read only when it is a regular file of at most ``MAX_MANIFEST_BYTES`` (a FIFO
would block, ``/dev/zero`` never ends, a huge file would fill memory), and parsed as JSON with
deep nesting turned into an error instead of a ``RecursionError``.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from .errors import IntegrityError

MAX_MANIFEST_BYTES = 16 * 2**20  # jms's own manifests are a few KB


def manifest_path(artifact: str | Path) -> Path:
    return Path(f"{artifact}.json")


def read_manifest(artifact: str | Path) -> dict[str, Any] | None:
    """The manifest beside ``artifact`` as a dict, None when there is none.

    ``IntegrityError`` when it exists but cannot be read, is too big, or is not a JSON object.
    """
    path = manifest_path(artifact)
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return None if stat.S_ISDIR(info.st_mode) else parse_manifest(path, info)


def parse_manifest(path: Path, info: os.stat_result | None = None) -> dict[str, Any]:
    """The JSON object in the manifest file ``path``, or ``IntegrityError`` saying why not."""
    try:
        info = info or os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise IntegrityError(f"The manifest {path} is not a regular file.")
        if info.st_size > MAX_MANIFEST_BYTES:
            raise IntegrityError(
                f"The manifest {path} is {info.st_size:,} bytes, more than a manifest ever is "
                f"({MAX_MANIFEST_BYTES:,}); it was not written by jupyter_modelsave."
            )
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            data = json.loads(fh.read(MAX_MANIFEST_BYTES + 1))
    except IntegrityError:
        raise
    except (OSError, ValueError, RecursionError) as err:
        raise IntegrityError(
            f"The manifest {path} cannot be read: {type(err).__name__}: {err}."
        ) from None
    if not isinstance(data, dict):
        raise IntegrityError(f"The manifest {path} is not a JSON object; export it again.")
    return data
