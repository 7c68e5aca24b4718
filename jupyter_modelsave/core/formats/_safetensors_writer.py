"""A one-pass safetensors writer: header first, then the tensors' bytes, hashed while written.

The file is byte-identical to ``safetensors.torch.save_file``'s for the same tensors (same header
JSON, tensor order and padding), except that ``__metadata__`` keys are written sorted, where the
library writes them in its hash map's order (which changes from one process to the next); with one
metadata key or none the bytes are identical. The library's rules, reproduced here:

- an 8-byte little-endian header length, then the JSON header, padded with spaces to a multiple
  of 8 bytes, then the tensors' bytes back to back;
- ``__metadata__`` first, then the tensors sorted by dtype (wider alignment first, in the order of
  the library's dtype enum) and then by name, each as ``{"dtype", "shape", "data_offsets"}``.

CPU tensors are written straight from their memory (no copy); the sha256 of the file is updated on
a second thread while the same bytes are written, so the file is never read back. CUDA tensors go
through two pinned host buffers: the copy of chunk i+1 (on a side stream) overlaps the write of
chunk i. Extra host memory is those two buffers, whatever the model's size. (Tensors on a second
GPU are copied one chunk at a time, without overlap.)
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CHUNK_BYTES = 64 * 2**20  # one write, one hash update, one pinned staging buffer

# safetensors' order for tensors: its dtype enum, descending (wider alignment first)
_ORDER = ("U64", "I64", "F64", "C64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16",
          "F8_E5M2FNUZ", "F8_E4M3FNUZ", "F8_E8M0", "F8_E4M3", "F8_E5M2", "I8", "U8", "BOOL")  # fmt: skip
_RANK = {name: rank for rank, name in enumerate(_ORDER)}
_TORCH_NAMES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
    "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
    "complex64": "C64", "uint16": "U16", "uint32": "U32", "uint64": "U64",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "float8_e4m3fnuz": "F8_E4M3FNUZ",
    "float8_e5m2fnuz": "F8_E5M2FNUZ", "float8_e8m0fnu": "F8_E8M0",
}  # fmt: skip


@dataclass
class WrittenFile:
    """What ``save_file`` wrote: its sha256, its size and how CUDA tensors were staged."""

    path: Path
    sha256: str
    size: int
    staging_bytes: int = 0  # pinned host memory used for CUDA tensors (two buffers), 0 if none


def dtype_name(dtype: torch.dtype) -> str | None:
    """safetensors' name for a torch dtype, or None when safetensors cannot store it."""
    return _TORCH_NAMES.get(str(dtype).removeprefix("torch."))


def header(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> tuple[bytes, list[tuple[str, torch.Tensor]]]:
    """(length prefix + padded JSON header, the tensors in file order), from metadata only."""
    ordered = sorted(tensors.items(), key=lambda item: (_RANK[_checked_dtype(*item)], item[0]))
    parts = []
    if metadata is not None:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise TypeError(f"safetensors metadata must map str to str; not {bad[:3]}.")
        parts.append(f'"__metadata__":{_json(dict(sorted(metadata.items())))}')
    offset = 0
    for name, tensor in ordered:
        nbytes = tensor.numel() * tensor.element_size()
        info = {"dtype": dtype_name(tensor.dtype), "shape": list(tensor.shape),
                "data_offsets": [offset, offset + nbytes]}  # fmt: skip
        parts.append(f"{_json(name)}:{_json(info)}")
        offset += nbytes
    text = ("{" + ",".join(parts) + "}").encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, ordered


def save_file(
    tensors: dict[str, torch.Tensor],
    path: str | Path,
    metadata: dict[str, str] | None = None,
    *,
    fsync: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
) -> WrittenFile:
    """Write ``tensors`` (contiguous, dense, not sharing memory) as safetensors; hash as it goes."""
    for name, tensor in tensors.items():
        if tensor.layout != torch.strided or not tensor.is_contiguous():
            raise ValueError(f"tensor {name!r} is not dense and contiguous; call .contiguous().")
    head, ordered = header(tensors, metadata)
    pieces = list(_pieces(ordered, chunk_bytes))
    staging = _CudaStaging(pieces, chunk_bytes) if any(p.is_cuda for p in pieces) else None
    path = Path(path)
    with open(path, "wb", buffering=0) as fh, _Hasher() as hasher:
        writeback = _Writeback(fh.fileno())
        hasher.write(fh, memoryview(head))
        for index, piece in enumerate(pieces):
            staged = staging is not None and staging.holds(index)
            data = staging.take(index, hasher) if staged else _host_bytes(piece)
            hasher.write(fh, data)
            writeback.written(len(data))
        digest = hasher.hexdigest()
        if fsync:
            os.fsync(fh.fileno())
        size = fh.tell()
    return WrittenFile(path, digest, size, staging.nbytes if staging else 0)


def _json(value: Any) -> str:
    # serde_json's encoding, as the library writes it: no spaces, UTF-8 kept, \uXXXX lowercase
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _checked_dtype(name: str, tensor: torch.Tensor) -> str:
    dtype = dtype_name(tensor.dtype)
    if dtype is None:
        raise ValueError(
            f"safetensors cannot store tensor {name!r} of dtype {tensor.dtype}; convert it first."
        )
    return dtype


def _pieces(ordered: list[tuple[str, torch.Tensor]], chunk: int) -> Iterator[torch.Tensor]:
    """1-D uint8 views of the tensors' bytes, in file order, at most ``chunk`` bytes each."""
    for _, tensor in ordered:
        if not tensor.numel():
            continue
        raw = tensor.detach().reshape(-1).view(torch.uint8)
        for start in range(0, raw.numel(), chunk):
            yield raw[start : start + chunk]


def _host_bytes(piece: torch.Tensor) -> memoryview:
    """The bytes of a CPU piece, without copying them (a piece on a second GPU: copied)."""
    return memoryview(piece.cpu().numpy())


class _Hasher:
    """sha256 updated on a worker thread while the main thread writes the same bytes.

    Both release the GIL, so hashing chunk i overlaps writing it; ``update`` calls stay in order.
    """

    def __enter__(self) -> _Hasher:
        self._digest = hashlib.sha256()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="jms-sha256")
        self._pending: Future | None = None
        return self

    def __exit__(self, *exc: Any) -> None:
        self._pool.shutdown(wait=True)

    def write(self, fh: Any, data: memoryview) -> None:
        self.drain()
        self._pending = self._pool.submit(self._digest.update, data)
        view = data
        while view:
            view = view[fh.write(view) :]

    def drain(self) -> None:
        """Wait until every byte handed to ``write`` is hashed (before reusing a buffer)."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def hexdigest(self) -> str:
        self.drain()
        return self._digest.hexdigest()


class _Writeback:
    """Asks Linux to start writing finished chunks to disk, so a later fsync waits for little.

    ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` starts the writeback without waiting for it; where
    it is missing (not Linux) nothing is done.
    """

    _WRITE = 2  # SYNC_FILE_RANGE_WRITE
    _STEP = 32 * 2**20

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._done = 0
        self._pending = 0
        self._call = _sync_file_range()

    def written(self, nbytes: int) -> None:
        self._pending += nbytes
        if self._call is None or self._pending < self._STEP:
            return
        self._call(self._fd, ctypes.c_int64(self._done), ctypes.c_int64(self._pending), self._WRITE)
        self._done += self._pending
        self._pending = 0


def _sync_file_range() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.sync_file_range
    except (OSError, AttributeError):
        return None


class _CudaStaging:
    """Device -> two pinned host buffers, the copy of the next CUDA piece overlapping this write.

    Copies run on a side stream (after the work already queued on the current stream); an event
    per buffer says when its bytes have landed. A buffer is refilled only once the bytes it held
    are written and hashed.
    """

    def __init__(self, pieces: list[torch.Tensor], chunk_bytes: int) -> None:
        self._pieces = pieces
        device = next(p.device for p in pieces if p.is_cuda)  # one GPU: the first tensor's
        self._order = [i for i, p in enumerate(pieces) if p.device == device]
        self._slot = {index: n % 2 for n, index in enumerate(self._order)}
        size = min(chunk_bytes, max(pieces[i].numel() for i in self._order))
        self._buffers = [torch.empty(size, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
        self._events = [torch.cuda.Event(), torch.cuda.Event()]
        self._stream = torch.cuda.Stream(device)
        self._stream.wait_stream(torch.cuda.current_stream(device))
        self.nbytes = 2 * size
        self._next = 0  # position in self._order of the next piece to copy
        self._launch()

    def holds(self, index: int) -> bool:
        """Whether piece ``index`` goes through the pinned buffers (it is on this GPU)."""
        return index in self._slot

    def take(self, index: int, hasher: _Hasher) -> memoryview:
        """The bytes of piece ``index`` in host memory, once its copy has finished."""
        slot = self._slot[index]
        hasher.drain()  # the other buffer's bytes are hashed: it may be refilled now
        self._launch()
        self._events[slot].synchronize()
        return memoryview(self._buffers[slot][: self._pieces[index].numel()].numpy())

    def _launch(self) -> None:
        if self._next >= len(self._order):
            return
        index = self._order[self._next]
        slot = self._slot[index]
        piece = self._pieces[index]
        with torch.cuda.stream(self._stream):
            self._buffers[slot][: piece.numel()].copy_(piece, non_blocking=True)
            self._events[slot].record(self._stream)
        self._next += 1
