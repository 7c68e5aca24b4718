"""Where every tensor's bytes go in a sharded safetensors artifact, from names, shapes and dtypes.

The layout is the one ``jms.export(model, format="safetensors")`` writes for the unsharded model
(``formats/safetensors_format.py``): tensors packed into ``model-0000i-of-0000N.safetensors`` files
of at most ``max_shard_size`` bytes in ``state_dict`` order, each file's header and tensor order as
``safetensors.torch.save_file`` writes them, and ``model.safetensors.index.json``. It is computed
from metadata only (meta tensors), identically on every rank, so every rank knows where to write
its slices without any data moving between ranks. A sharded export is therefore byte for byte the
artifact the unsharded model would give (same sha256), always as a folder.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..formats._safetensors_writer import header
from ..formats.safetensors_format import _header, _string_meta, split_shards

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Place:
    """Where one tensor lives: its file, the byte offset of its first byte, shape and dtype."""

    file: str
    start: int
    shape: Shape
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass
class Layout:
    """Every file's header and size, every tensor's place, and the index file's bytes."""

    headers: dict[str, bytes]
    sizes: dict[str, int]
    places: dict[str, Place]
    index: bytes

    @property
    def files(self) -> list[str]:
        return list(self.headers)

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values()) + len(self.index)

    def digest(self) -> str:
        """A short fingerprint, to check that every rank computed the same layout."""
        digest = hashlib.sha256(self.index)
        for name in self.files:
            digest.update(self.headers[name])
        return digest.hexdigest()[:16]


def plan_layout(
    specs: dict[str, tuple[Shape, torch.dtype]],
    aliases: dict[str, str],
    metadata: dict[str, Any],
    max_shard_size: int,
) -> Layout:
    """The layout of ``specs`` (name -> full shape and dtype, in ``state_dict`` order).

    Raises ``ValueError`` for a dtype safetensors cannot store.
    """
    metas = {
        n: torch.empty(shape, dtype=dtype, device="meta") for n, (shape, dtype) in specs.items()
    }
    shards = split_shards(metas, max_shard_size)
    extra = {"aliases": aliases, "metadata": metadata}
    headers, sizes, places, weight_map = {}, {}, {}, {}
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        head, ordered = header(shard, _header(shard, extra))
        offset = len(head)
        for name, tensor in ordered:
            places[name] = Place(file, offset, tuple(tensor.shape), tensor.dtype)
            offset += tensor.numel() * tensor.element_size()
        headers[file], sizes[file] = head, offset
        weight_map.update(dict.fromkeys(shard, file))
    total = sum(p.nbytes for p in places.values())
    meta = {"total_size": total, **_string_meta(extra)}
    index = json.dumps({"metadata": meta, "weight_map": weight_map}, indent=2).encode()
    return Layout(headers, sizes, places, index)


def element_runs(shape: Shape, offsets: Shape, sizes: Shape) -> Iterator[tuple[int, int, int]]:
    """The contiguous runs of a chunk (``offsets``, ``sizes``) of a row-major tensor of ``shape``.

    Yields (element offset in the full tensor, element offset in the chunk, element count). A
    chunk of whole rows (FSDP's ``Shard(0)``) is one run; a column block (``Shard(1)``) one run
    per row.
    """
    if not shape:
        yield 0, 0, 1
        return
    if any(s == 0 for s in sizes):
        return
    split = len(shape) - 1  # first dim from which the chunk spans whole rows of what follows
    while split > 0 and sizes[split] == shape[split]:
        split -= 1
    full_strides = _strides(shape)
    run = sizes[split] * full_strides[split]
    chunk_strides = _strides(sizes)
    for index in itertools.product(*map(range, sizes[:split])):
        full = sum((o + i) * s for o, i, s in zip(offsets, index, full_strides))
        full += offsets[split] * full_strides[split]
        local = sum(i * s for i, s in zip(index, chunk_strides))
        yield full, local, run


def _strides(shape: Shape) -> list[int]:
    return [math.prod(shape[i + 1 :]) for i in range(len(shape))]
