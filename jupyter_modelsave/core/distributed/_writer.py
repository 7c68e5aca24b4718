"""A DCP ``StorageWriter`` that writes each rank's slices straight into the final safetensors files.

``torch.distributed.checkpoint.save`` plans which rank writes what (each rank its own shards; a
tensor every rank holds whole, such as a plain buffer, by one rank only) and shares failures; this
writer does the writing. Rank 0 has already created every file with its header at its full size
(``export.create_files``), so each rank ``pwrite``s its chunks at their offsets in parallel: a chunk
of whole rows (FSDP's ``Shard(0)``) in one run, a column block (``Shard(1)``) one run per row. CPU
shards are written from their own memory (no copy); shards on a GPU go through one host buffer of at
most ``CHUNK_BYTES``. No ``.metadata`` pickle is written: the artifact is plain safetensors.
"""

from __future__ import annotations

import ctypes
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner, WriteItem, WriteItemType
from torch.distributed.checkpoint.storage import StorageWriter, WriteResult
from torch.futures import Future

from ..errors import ExportError
from ..formats._safetensors_writer import _sync_file_range
from ._layout import Layout, Place, element_runs

CHUNK_BYTES = 64 * 2**20


class LayoutWriter(StorageWriter):
    """Writes DCP's write items into the files of ``layout`` inside ``folder``."""

    def __init__(self, folder: Path, layout: Layout) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.layout = layout

    def reset(self, checkpoint_id: Any = None) -> None:
        pass

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        pass

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        return plans

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        results = write_items(self.folder, self.layout, plan.items, planner.resolve_data)
        future: Future[list[WriteResult]] = Future()
        future.set_result(results)
        return future

    def finish(self, metadata: Any, results: list[list[WriteResult]]) -> None:
        """On rank 0, after every rank wrote: every byte of every tensor was written once."""
        check_coverage(self.layout, [r for rank in results for r in rank])

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
        return True

    def storage_meta(self) -> None:
        return None


def write_items(
    folder: Path, layout: Layout, items: list[WriteItem], resolve: Callable[[WriteItem], Any]
) -> list[WriteResult]:
    """Write this rank's items; return one ``WriteResult`` (bytes written) per item."""
    results = []
    fds: dict[str, int] = {}
    staging = _HostStaging()
    try:
        for item in items:
            place = _place_of(layout, item)
            if place.file not in fds:
                fds[place.file] = os.open(folder / place.file, os.O_WRONLY)
            chunk = item.tensor_data.chunk  # type: ignore[union-attr]
            nbytes = write_chunk(
                fds[place.file], place, tuple(chunk.offsets), tuple(chunk.sizes),
                resolve(item), staging,
            )  # fmt: skip
            results.append(
                WriteResult(index=item.index, size_in_bytes=nbytes, storage_data=place.file)
            )
    finally:
        for fd in fds.values():
            os.close(fd)
    return results


def write_chunk(
    fd: int, place: Place, offsets: tuple[int, ...], sizes: tuple[int, ...], tensor: torch.Tensor,
    staging: _HostStaging,
) -> int:  # fmt: skip
    """``pwrite`` one chunk (``tensor``, at ``offsets`` in the full tensor) where it belongs."""
    tensor = tensor.detach()
    if tuple(tensor.shape) != sizes or tensor.dtype != place.dtype:
        raise ExportError(
            f"A slice of {place.file} does not fit its tensor: {tuple(tensor.shape)} "
            f"{tensor.dtype} where {sizes} {place.dtype} was planned. The ranks' models differ."
        )
    if not tensor.numel():
        return 0
    raw = tensor.contiguous().reshape(-1).view(torch.uint8)
    size = place.dtype.itemsize
    written = 0
    for full, local, count in element_runs(place.shape, offsets, sizes):
        piece = raw[local * size : (local + count) * size]
        written += staging.pwrite(fd, piece, place.start + full * size)
    return written


def check_coverage(layout: Layout, results: list[WriteResult]) -> None:
    """Every tensor got exactly its size in bytes (a missing or doubled chunk would not)."""
    written = Counter()
    for result in results:
        written[result.index.fqn] += result.size_in_bytes
    wrong = [n for n, p in layout.places.items() if written[n] != p.nbytes]
    if wrong:
        raise ExportError(
            f"{len(wrong)} tensor(s) were not written whole (first: {wrong[0]}: "
            f"{written[wrong[0]]:,} of {layout.places[wrong[0]].nbytes:,} bytes). The ranks' "
            "models or meshes differ; export again from one consistent job."
        )


def _place_of(layout: Layout, item: WriteItem) -> Place:
    place = layout.places.get(item.index.fqn)
    if item.type == WriteItemType.BYTE_IO or item.tensor_data is None or place is None:
        raise ExportError(
            f"{item.index.fqn!r} is not one of the model's tensors; safetensors holds tensors only."
        )
    return place


class _HostStaging:
    """Writes CPU bytes as they are; bytes on another device through one reused host buffer."""

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None

    def pwrite(self, fd: int, piece: torch.Tensor, position: int) -> int:
        if piece.device.type == "cpu":
            return _pwrite_all(fd, memoryview(piece.numpy()), position)
        written = 0
        for start in range(0, piece.numel(), CHUNK_BYTES):
            part = piece[start : start + CHUNK_BYTES]
            host = self._host(part.numel())
            host.copy_(part)
            written += _pwrite_all(fd, memoryview(host.numpy()), position + start)
        return written

    def _host(self, nbytes: int) -> torch.Tensor:
        if self._buffer is None or self._buffer.numel() < nbytes:
            pinned = torch.cuda.is_available()
            self._buffer = torch.empty(CHUNK_BYTES, dtype=torch.uint8, pin_memory=pinned)
        return self._buffer[:nbytes]


def _pwrite_all(fd: int, view: memoryview, position: int) -> int:
    """Write all of ``view`` at ``position``, then ask Linux to start writing it back to disk.

    Starting the writeback now (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which does not wait)
    lets the disk work while the ranks hash, so the fsync before the rename waits for little.
    """
    start, total = position, len(view)
    while view:
        done = os.pwrite(fd, view, position)
        view, position = view[done:], position + done
    if _SYNC_FILE_RANGE is not None and total >= 2**20:
        _SYNC_FILE_RANGE(fd, ctypes.c_int64(start), ctypes.c_int64(total), 2)
    return total


_SYNC_FILE_RANGE = _sync_file_range()
