"""Reading a DCP checkpoint folder (what ``torch.distributed.checkpoint.save`` wrote) safely.

A DCP folder holds ``.metadata``, a *pickle* of DCP's ``Metadata``, and ``__<rank>_<n>.distcp``
files of ``torch.save`` blobs. DCP's own ``FileSystemReader.read_metadata`` calls ``pickle.load``
on it, so a crafted folder would run code the moment it is opened. Here ``.metadata`` is read
with an unpickler that resolves only DCP's metadata dataclasses and a few harmless torch and
pathlib names (``ALLOWED``); anything else (``os.system``, ``builtins.eval``, ...) raises
``UnsafeArtifactError`` unless ``trusted=True`` (then plain ``pickle``, as DCP does). The tensors
are then read by DCP's reader, which loads each blob with ``torch.load(weights_only=True)``; the
non-tensor entries (``BytesStorageMetadata``: DCP would ``torch.load`` them with
``weights_only=False``) are never read.

Before any tensor is read, the folder is checked (``IntegrityError``): every chunk of every tensor
has a storage entry, every entry names a plain file inside the folder that exists and is long
enough, and each tensor's chunks tile it exactly. A missing or truncated shard file is found there.
"""

from __future__ import annotations

import math
import os
import pickle
import stat
from pathlib import Path
from typing import Any, NoReturn

import torch

from ..errors import IntegrityError, UnsafeArtifactError
from ..formats._safetensors_header import _plain_name

METADATA_FILE = ".metadata"
MAX_METADATA_BYTES = 1 << 30

_DCP = "torch.distributed.checkpoint"
ALLOWED = {
    (f"{_DCP}.metadata", name)
    for name in ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
                 "TensorProperties", "StorageMeta", "MetadataIndex", "_MEM_FORMAT_ENCODING")
} | {
    (f"{_DCP}.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # a name -> torch.layout lookup
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("collections", "OrderedDict"),
}  # fmt: skip


class _MetadataUnpickler(pickle.Unpickler):
    """Resolves only ``ALLOWED`` names and torch dtypes (``torch.float32``, ...)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED or (module == "torch" and _is_dtype(name)):
            return super().find_class(module, name)
        raise UnsafeArtifactError(
            f"The DCP metadata asks for {module}.{name}, which is not part of a checkpoint's "
            "metadata: unpickling it could run code. If you made this checkpoint yourself or trust "
            "its source, pass trusted=True."
        )


def _is_dtype(name: str) -> bool:
    return isinstance(getattr(torch, name, None), torch.dtype)


def read_metadata(folder: Path, trusted: bool) -> Any:
    """The checkpoint's ``Metadata``, unpickled safely (see the module docstring) and checked."""
    from torch.distributed.checkpoint.metadata import Metadata

    path = folder / METADATA_FILE
    size = _regular_size(path, "its .metadata file")
    if size > MAX_METADATA_BYTES:
        _refuse(folder, f".metadata is {size:,} bytes, more than the {MAX_METADATA_BYTES:,} read")
    with open(path, "rb") as fh:
        try:
            metadata = pickle.load(fh) if trusted else _MetadataUnpickler(fh).load()
        except UnsafeArtifactError:
            raise
        except Exception as err:
            _refuse(folder, f".metadata cannot be read ({type(err).__name__}: {err})")
    if not isinstance(metadata, Metadata):
        _refuse(folder, f".metadata holds a {type(metadata).__name__}, not DCP's Metadata")
    check_complete(folder, metadata)
    return metadata


def check_complete(folder: Path, metadata: Any) -> None:
    """Every tensor's chunks are stored in files of the folder that exist and are long enough."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, TensorStorageMetadata

    storage = metadata.storage_data
    if not isinstance(storage, dict) or not isinstance(metadata.state_dict_metadata, dict):
        _refuse(folder, ".metadata has no storage table")
    sizes: dict[str, int] = {}
    for index, info in storage.items():
        _check_entry(folder, index, info, sizes)
    for name, entry in metadata.state_dict_metadata.items():
        if isinstance(entry, TensorStorageMetadata):
            _check_tensor(folder, name, entry, storage)
        elif not isinstance(entry, BytesStorageMetadata):
            _refuse(folder, f"entry {name!r} is a {type(entry).__name__}")


def _check_entry(folder: Path, index: Any, info: Any, sizes: dict[str, int]) -> None:
    from torch.distributed.checkpoint.filesystem import _StorageInfo

    name = getattr(info, "relative_path", None)
    if not isinstance(info, _StorageInfo) or not isinstance(name, str) or not _plain_name(name):
        _refuse(
            folder,
            f"the entry of {getattr(index, 'fqn', index)!r} names {name!r}, not a file of the folder",
        )
    if name not in sizes:
        sizes[name] = _regular_size(folder / name, f"the shard file {name}")
    offset, length = info.offset, info.length
    if not (_natural(offset) and _natural(length)) or offset + length > sizes[name]:
        _refuse(folder, f"the shard file {name} is {sizes[name]:,} bytes, shorter than its "
                        f"entries say (missing data: a partial copy?)")  # fmt: skip


def _check_tensor(folder: Path, name: str, entry: Any, storage: dict) -> None:
    from torch.distributed.checkpoint.metadata import MetadataIndex

    shape = tuple(entry.size)
    if not all(_natural(s) for s in shape) or not isinstance(entry.properties.dtype, torch.dtype):
        _refuse(folder, f"tensor {name!r} has a malformed shape or dtype")
    covered = 0
    for chunk in entry.chunks:
        offsets, sizes = tuple(chunk.offsets), tuple(chunk.sizes)
        ok = all(
            _natural(o) and _natural(s) and o + s <= n for o, s, n in zip(offsets, sizes, shape)
        )
        if len(offsets) != len(shape) or len(sizes) != len(shape) or not ok:
            _refuse(folder, f"a chunk of tensor {name!r} lies outside its shape {list(shape)}")
        if MetadataIndex(name, torch.Size(offsets)) not in storage:
            _refuse(folder, f"the chunk of tensor {name!r} at {list(offsets)} has no stored data "
                            "(a rank's shard is missing)")  # fmt: skip
        covered += math.prod(sizes)
    if covered != math.prod(shape) or _overlap(entry.chunks):
        _refuse(folder, f"the chunks of tensor {name!r} do not cover its shape {list(shape)} "
                        "exactly (a rank's shard is missing)")  # fmt: skip


def _overlap(chunks: list[Any]) -> bool:
    boxes = [(tuple(c.offsets), tuple(c.sizes)) for c in chunks]
    return any(
        all(ao < bo + bs and bo < ao + as_ for ao, as_, bo, bs in zip(*a, *b))
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
    )


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _regular_size(path: Path, what: str) -> int:
    try:
        info = os.stat(path)
    except OSError:
        _refuse(path.parent, f"{what} is missing")
    if not stat.S_ISREG(info.st_mode):
        _refuse(path.parent, f"{what} is not a regular file")
    return info.st_size


def _refuse(folder: Path, why: str) -> NoReturn:
    raise IntegrityError(
        f"{folder} is not a complete DCP checkpoint: {why}. Copy the whole folder written by "
        "torch.distributed.checkpoint.save (every rank's files and .metadata) and try again."
    )


def checked_reader(folder: Path, metadata: Any) -> Any:
    """DCP's ``FileSystemReader`` over ``folder`` that returns the checked ``metadata``."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class _CheckedReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            metadata.storage_meta = metadata.storage_meta or StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return _CheckedReader(folder)
