"""``jms.convert``: a DCP checkpoint folder into a safetensors artifact, one tensor at a time.

Runs in one process (no process group needed). The folder is read safely and checked first
(``_dcp_folder``). The artifact has the layout of a sharded export (``_layout``): for a checkpoint
of a model's ``state_dict`` without tied weights it is byte for byte what ``jms.export`` of that
model gives. Each tensor is assembled whole from its chunks by ``torch.distributed.checkpoint.load``,
written and hashed, then freed: memory stays about two of the largest tensor, whatever the
checkpoint's size. Parity reads every tensor back from the written files and from the checkpoint
and compares them bitwise. Non-tensor entries (an optimizer's step counters as Python numbers, ...)
cannot go into safetensors: they are skipped and listed in the manifest (``source.skipped``).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidOptionError
from ..formats import get_format
from ..formats._safetensors_writer import CHUNK_BYTES, _Hasher, _host_bytes, _pieces
from ..formats.base import Exported, ExportJob
from ..formats.safetensors_format import DEFAULT_MAX_SHARD_SIZE, INDEX_FILE
from ..inputs import ExampleInputs
from ..options import (
    artifact_name_from,
    check_artifact_name,
    check_destination,
    check_flag,
    check_metadata,
)
from ..parity import ParityReport
from ..staging import StagedExport
from ._dcp_folder import checked_reader, read_metadata
from ._layout import Layout, plan_layout
from ._parity import parity_report
from .export import _work_parent, create_files

EXPORTER = "torch.distributed.checkpoint (convert)"
PROBE = "round trip: checkpoint vs written tensors"


def convert(source: str | Path, dest: str | Path, format: str = "safetensors", *,
            name: str | None = None, version: str | None = None, overwrite: bool = False,
            prefix: str | None = None, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
            metadata: dict[str, Any] | None = None, parity: bool = True,
            trusted: bool = False) -> Path:  # fmt: skip
    """Write the tensors of the DCP checkpoint folder ``source`` as a safetensors artifact.

    ``dest`` as for ``jms.export`` (a folder gets ``<name>_v<version>_<sha12>.safetensors/``).
    ``prefix``: keep only the entries whose name starts with it, without it (``"model."`` takes the
    model out of ``dcp.save({"model": ..., "optim": ...})``); default, every tensor. ``name``
    defaults to the checkpoint folder's name. ``trusted=True`` unpickles ``.metadata`` without
    restriction (only for checkpoints you trust). Returns the artifact's path.
    """
    folder = _source_folder(source)
    if format != "safetensors":
        raise InvalidOptionError(
            f"jms.convert writes format='safetensors' only, not {format!r}: load the safetensors "
            "artifact into a model and export that model to other formats."
        )
    dest = check_destination(dest)
    options = get_format("safetensors", "torch").check_options({"max_shard_size": max_shard_size})
    meta, parity = check_metadata(metadata), check_flag("parity", parity)
    name = check_artifact_name(
        name if name is not None else artifact_name_from(folder.resolve().name)
    )
    checkpoint = _read(folder, check_flag("trusted", trusted))
    selected, skipped = _select(checkpoint, _check_prefix(prefix))
    layout = _plan(selected, meta, options["max_shard_size"])
    workdir = create_files(_work_parent(dest, "safetensors"), layout)
    try:
        reader = checked_reader(folder, checkpoint)
        hashes = _write(workdir, layout, lambda n: _load(reader, selected[n]))
        report = _verify(workdir, layout, reader, selected) if parity else None
        source_info = {"kind": "torch.distributed.checkpoint", "path": str(folder),
                       "prefix": prefix, "tensors": len(selected), "skipped": skipped}  # fmt: skip
        staged = ConvertedExport(workdir, hashes, report, name, meta, options, source_info)
        return staged.write(dest, version=version, overwrite=overwrite)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class ConvertedExport(StagedExport):
    """A converted checkpoint waiting in its work folder; its manifest also names its source."""

    def __init__(self, folder: Path, hashes: dict[str, str], report: ParityReport | None, name: str,
                 metadata: dict[str, Any], options: dict[str, Any],
                 source: dict[str, Any]) -> None:  # fmt: skip
        job = ExportJob(torch.nn.Module(), ExampleInputs(()), [], [], {}, None, "auto", metadata,
                        folder, None, options)  # fmt: skip
        skipped = len(source["skipped"])
        warnings_ = [f"{skipped} checkpoint entries not converted (not tensors, or outside the "
                     "prefix); the manifest's source.skipped names them"] if skipped else []  # fmt: skip
        exported = Exported(folder, EXPORTER, file_hashes=hashes)
        super().__init__(get_format("safetensors", "torch"), exported, job, report, name, warnings_,
                         [], (0.0, 0.0))  # fmt: skip
        self.source = source

    def manifest(self, name: str, version: str) -> dict[str, Any]:
        return {**super().manifest(name, version), "source": self.source}


def _source_folder(source: Any) -> Path:
    try:
        folder = Path(source)
        is_dir = folder.is_dir()
    except (TypeError, ValueError, OSError):
        is_dir = False
    if not is_dir:
        raise InvalidOptionError(
            f"{source!r} is not a folder; pass the folder torch.distributed.checkpoint.save wrote "
            "(it holds .metadata and __<rank>_<n>.distcp files)."
        )
    return folder


def _check_prefix(prefix: Any) -> str:
    if prefix is None:
        return ""
    if not isinstance(prefix, str):
        raise InvalidOptionError(f"prefix must be a string such as 'model.', got {prefix!r}.")
    return prefix


def _read(folder: Path, trusted: bool) -> Any:
    from ..load_checks import readable

    return readable(folder, "a DCP checkpoint", lambda: read_metadata(folder, trusted))


def _select(checkpoint: Any, prefix: str) -> tuple[dict[str, tuple[str, Any]], list[str]]:
    """{artifact name: (checkpoint name, its TensorStorageMetadata)} and the names left out."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    selected, skipped = {}, []
    for key, entry in checkpoint.state_dict_metadata.items():
        if isinstance(entry, TensorStorageMetadata) and key.startswith(prefix) and key != prefix:
            selected[key[len(prefix) :]] = (key, entry)
        else:
            skipped.append(key)
    if not selected:
        within = f" whose name starts with {prefix!r}" if prefix else ""
        raise InvalidOptionError(
            f"The checkpoint holds no tensors{within}; its entries are: "
            f"{', '.join(list(checkpoint.state_dict_metadata)[:10])}."
        )
    return selected, skipped


def _plan(selected: dict[str, tuple[str, Any]], metadata: dict[str, Any], limit: int) -> Layout:
    specs = {n: (tuple(e.size), e.properties.dtype) for n, (_, e) in selected.items()}
    try:
        return plan_layout(specs, {}, metadata, limit)
    except ValueError as err:
        raise InvalidOptionError(str(err)) from None


def _load(reader: Any, entry: tuple[str, Any]) -> torch.Tensor:
    """One whole tensor of the checkpoint, assembled from its chunks by DCP."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    key, meta = entry
    tensor = torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DCP warns that it loads without a process group
        dcp.load({key: tensor}, storage_reader=reader,
                 planner=DefaultLoadPlanner(allow_partial_load=True), no_dist=True)  # fmt: skip
    return tensor


def _write(workdir: Path, layout: Layout, load: Any) -> dict[str, str]:
    """Fill each file in order, one tensor in memory at a time; return every file's sha256."""
    import hashlib

    hashes = {INDEX_FILE: hashlib.sha256(layout.index).hexdigest()}
    for file in layout.files:
        names = sorted((p.start, n) for n, p in layout.places.items() if p.file == file)
        with open(workdir / file, "r+b", buffering=0) as fh, _Hasher() as hasher:
            hasher.write(fh, memoryview(layout.headers[file]))
            for _, name in names:
                for piece in _pieces([(name, load(name))], CHUNK_BYTES):
                    hasher.write(fh, _host_bytes(piece))
                hasher.drain()
            hashes[file] = hasher.hexdigest()
    return hashes


def _verify(workdir: Path, layout: Layout, reader: Any,
            selected: dict[str, tuple[str, Any]]) -> ParityReport:  # fmt: skip
    """Every written tensor, read back with safetensors, equals the checkpoint's (bitwise, dtype)."""
    from safetensors import safe_open

    problems = []
    for file in layout.files:
        with safe_open(str(workdir / file), framework="pt") as handle:
            for name in (n for n, p in layout.places.items() if p.file == file):
                expected, written = _load(reader, selected[name]), handle.get_tensor(name)
                if written.dtype != expected.dtype or not torch.equal(written, expected):
                    problems.append((name, "the written tensor differs from the checkpoint's"))
    return parity_report(layout, [problems], PROBE)
