"""Checks of an untrusted safetensors artifact before the safetensors library opens it.

The library validates each file's header itself, cheaply and before allocating anything: the
header length must fit in the file and stay under 100 MB, the header must be JSON with known
dtypes, and every tensor's byte size must match its offsets, which must be contiguous, must not
overlap and must cover the data exactly (``tests/reliability/test_untrusted.py`` proves it). What
it cannot know is a sharded artifact's layout: the index names the shard files, and a crafted index
could name files outside the artifact (``../x``, ``/dev/zero``), whose bytes the manifest's sha256
does not cover. ``check_artifact`` refuses those, and files that are not regular files (a FIFO would
block the reader forever) or whose 8-byte header length is impossible, with ``IntegrityError``.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import NoReturn

from ..errors import IntegrityError

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
MAX_INDEX_BYTES = 64 * 2**20  # an index of a million tensors is ~60 MB


def check_artifact(path: Path, index_name: str) -> None:
    """Refuse a safetensors file, or a sharded folder with index ``index_name``, that is unsafe to open."""
    path = Path(path)
    if path.is_dir():
        for shard in _shards(path, index_name):
            check_file(shard)
    else:
        check_file(path)


def check_file(path: Path) -> None:
    """A regular file whose 8-byte little-endian header length fits in it (read: 8 bytes)."""
    size = _regular_size(path)
    if size < 8:
        _refuse(path, f"it is {size} bytes long, shorter than a safetensors header")
    with open(path, "rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
    if length > MAX_HEADER_BYTES:
        _refuse(path, f"its header claims {length:,} bytes (the limit is {MAX_HEADER_BYTES:,})")
    if 8 + length > size:
        _refuse(path, f"its header claims {length:,} bytes but the file has {size:,}")


def _shards(folder: Path, index_name: str) -> list[Path]:
    """The files the index names, each a plain file name inside ``folder``."""
    index_path = folder / index_name
    if _regular_size(index_path) > MAX_INDEX_BYTES:
        _refuse(index_path, f"the index is larger than {MAX_INDEX_BYTES:,} bytes")
    try:
        index = json.loads(index_path.read_bytes())
    except (ValueError, RecursionError) as err:
        _refuse(index_path, f"the index is not JSON ({type(err).__name__})")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        _refuse(index_path, "the index has no weight_map of tensor names to file names")
    root = folder.resolve()
    shards = []
    for name in dict.fromkeys(weight_map.values()):
        shard = folder / name
        if not _plain_name(name) or shard.resolve().parent != root:
            _refuse(index_path, f"the index names {name!r}, which is not a file in the artifact")
        shards.append(shard)
    return shards


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


def _regular_size(path: Path) -> int:
    try:
        info = os.stat(path)
    except (OSError, ValueError) as err:
        _refuse(path, f"it cannot be read ({type(err).__name__}: {err})")
    if not stat.S_ISREG(info.st_mode):
        _refuse(path, "it is not a regular file")
    return info.st_size


def _refuse(path: Path, why: str) -> NoReturn:
    raise IntegrityError(
        f"{path} is not a valid safetensors artifact: {why}. It is damaged or was crafted; "
        "export it again from the model."
    )
