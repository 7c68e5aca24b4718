"""The collective safetensors export of a sharded model (DTensor weights), and its parity.

``jms.stage``/``jms.export`` hand a model whose weights are DTensors to ``stage_sharded`` /
``export_sharded``; every rank calls them. The steps, each one a ``Collective.agree`` so that a
failure on any rank raises on every rank:

1. every rank checks the options and computes the artifact's layout from the full shapes
   (``_layout``); the layouts must agree;
2. rank 0 creates a hidden work folder (beside the destination for ``export``, so that writing is
   a rename) holding every file with its header at its full size, and the index;
3. ``torch.distributed.checkpoint.save`` with ``LayoutWriter``: every rank writes its own slices
   into those files, in parallel, from its shards' memory;
4. every rank hashes (and fsyncs) every world-size-th file; rank 0 gets all hashes;
5. parity: every rank reads its slices back with the safetensors library and compares them bitwise
   with its shards.

``write`` then renames the folder into place on rank 0 (``artifacts.write_artifact``: atomic, under
the folder's lock, with one manifest holding every file's sha256, the world size and the mesh) and
every rank returns the same path. A failure on any rank removes the work folder.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import artifacts
from ..errors import InvalidOptionError, WriteError
from ..formats import get_format
from ..formats.safetensors_format import INDEX_FILE
from ..options import check_artifact_name, check_destination, check_flag, check_metadata
from ..parity import ParityReport
from ..verify import Progress, check_progress
from ._collective import Collective, check_timeout, joined
from ._layout import Layout, plan_layout
from ._parity import parity_report, slice_problems
from ._state import full_specs, mesh_description, sharded_state
from ._writer import LayoutWriter

EXPORTER = "torch.distributed.checkpoint"
WORK_NAME = ".jms-sharded-stage"
# stage options of graph formats: accepted and unused by safetensors, as for an unsharded model
_GRAPH_OPTIONS = {"opset", "dynamic_axes", "input_names", "output_names", "atol", "rtol", "exporter",
                  "external_data"}  # fmt: skip


@dataclass
class Request:
    """The checked options of one sharded stage."""

    name: str
    metadata: dict[str, Any]
    format_options: dict[str, Any]
    parity: bool
    progress: Progress


def stage_sharded(model: torch.nn.Module, example_inputs: Any = None, *, build: Callable[..., Any],
                  stage_whole: Callable[..., Any], format: str = "onnx", name: str,
                  parity: bool = True, metadata: dict | None = None,
                  device: Any = None, progress: Progress | None = None, timeout: float | None = None,
                  gather: bool = False, work_parent: Path | None = None,
                  _call: str = "jms.stage", **options: Any) -> Any:  # fmt: skip
    """``jms.stage`` of a model whose weights are DTensors; a collective call (every rank).

    ``core.staging`` hands in ``build`` (makes its ``ShardedStagedExport`` of the staged folder)
    and ``stage_whole`` (its ``stage``, for the model gathered to rank 0).

    ``format="safetensors"`` is written by every rank in parallel (see the module docstring).
    Other formats need the whole model in one process: ``gather=True`` gathers it to rank 0
    (``gather.stage_gathered``). ``timeout``: seconds to wait for the other ranks at each step
    (``_collective.check_timeout``). Graph options (``opset``, ``dynamic_axes``, ...) are accepted
    and ignored for safetensors, as for an unsharded model; ``device`` is refused (each rank
    writes its shards from where they live).
    """
    seconds = check_timeout(timeout)
    if format != "safetensors" or gather is not False:
        from .gather import stage_gathered

        return stage_gathered(model, example_inputs, stage_whole, timeout=seconds, gather=gather,
                              format=format, call=_call, name=name, parity=parity,
                              metadata=metadata, device=device, progress=progress, **options)  # fmt: skip
    with joined(_call, seconds) as coll:
        checked: list[Request] = []  # each rank keeps its own (a callable does not travel)
        coll.agree(
            lambda: checked.append(_request(name, parity, metadata, device, progress, options))
        )
        return _stage(coll, model, checked[0], work_parent, build)


def export_sharded(model: torch.nn.Module, dest: str | Path, example_inputs: Any = None, *,
                   version: str | None = None, overwrite: bool = False,
                   allow_mismatch: bool = False, **options: Any) -> Path:  # fmt: skip
    """``jms.export`` of a sharded model: stage beside ``dest`` (so writing is a rename), then write."""
    parent = _work_parent(check_destination(dest), options.get("format", "onnx"))
    staged = stage_sharded(model, example_inputs, work_parent=parent, _call="jms.export", **options)
    try:
        return staged.write(
            dest, version=version, overwrite=overwrite, allow_mismatch=allow_mismatch
        )
    finally:
        staged.discard()


def _request(name: str, parity: Any, metadata: Any, device: Any, progress: Any,
             options: dict[str, Any]) -> Request:  # fmt: skip
    if device is not None:
        raise InvalidOptionError(
            "device= does not apply to a sharded model: every rank writes its shards from where "
            "they live. Leave device unset."
        )
    if options.get("external_data") is not None:
        raise InvalidOptionError("external_data= does not apply to format 'safetensors'.")
    weight_options = {k: v for k, v in options.items() if k not in _GRAPH_OPTIONS}
    fmt = get_format("safetensors", "torch")
    return Request(
        name=check_artifact_name(name),
        metadata=check_metadata(metadata),
        format_options=fmt.check_options(weight_options),
        parity=check_flag("parity", parity),
        progress=check_progress(progress),
    )


def _stage(coll: Collective, model: torch.nn.Module, request: Request,
           work_parent: Path | None, build: Callable[..., Any]) -> Any:  # fmt: skip
    progress = request.progress
    planned: list[tuple[dict[str, torch.Tensor], Layout]] = []
    shared = coll.agree(lambda: _plan(model, request, planned))
    _check_same_everywhere(shared)
    (tensors, layout), distributed = planned[0], shared[0]["distributed"]
    parent = Path(work_parent) if work_parent is not None else Path(tempfile.gettempdir())
    folder = Path(coll.from_coordinator(lambda: str(create_files(parent, layout))))
    try:
        coll.agree(lambda: _check_visible(folder, layout))
        coll.agree(lambda: _save(coll, tensors, folder, layout, progress))
        hashes = coll.agree(lambda: _hash_share(folder, layout, coll, progress))
        merged = {name: digest for share in hashes for name, digest in share.items()}
        report = parity_again(coll, folder, layout, tensors) if request.parity else None
        staged = build(coll, model, folder, merged, report, request, (layout, tensors), distributed)
        coll.agree(lambda: progress("done", 1.0))
    except BaseException:
        if coll.is_coordinator:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return staged


def _plan(model: torch.nn.Module, request: Request,
          planned: list[tuple[dict[str, torch.Tensor], Layout]]) -> dict[str, Any]:  # fmt: skip
    """Append this rank's tensors and layout to ``planned``; return what all ranks must share."""
    import torch.distributed as dist

    request.progress("prepare", 0.0)
    tensors, aliases = sharded_state(model)
    try:
        layout = plan_layout(full_specs(tensors), aliases, request.metadata,
                             request.format_options["max_shard_size"])  # fmt: skip
    except ValueError as err:
        raise InvalidOptionError(str(err)) from None
    mesh = mesh_description(tensors)
    if len(mesh["ranks"]) != dist.get_world_size():
        raise InvalidOptionError(
            f"The model is sharded over {len(mesh['ranks'])} of the job's {dist.get_world_size()} "
            "ranks; jupyter_modelsave exports models sharded over every rank of the job."
        )
    planned.append((tensors, layout))
    distributed = {"world_size": dist.get_world_size(), "backend": str(dist.get_backend()),
                   "mesh": mesh}  # fmt: skip
    return {"distributed": distributed, "layout": layout.digest()}


def _check_same_everywhere(shared: list[dict[str, Any]]) -> None:
    """Every rank planned the same artifact (same names, shapes, dtypes, mesh), else raise everywhere."""
    differ = [rank for rank, value in enumerate(shared) if value != shared[0]]
    if differ:
        raise InvalidOptionError(
            f"Ranks {differ} hold another model than rank 0 (other names, shapes, dtypes, options "
            "or mesh). Call jms.export with the same model and arguments on every rank."
        )


def create_files(parent: Path, layout: Layout) -> Path:
    """Rank 0: a hidden work folder in ``parent`` with every file at its size, headers written."""
    artifacts._prepare_folder(parent)
    free = shutil.disk_usage(parent).free
    if free < layout.total_bytes + 64 * 1024:
        raise WriteError(
            28,
            f"Not enough space in {parent}: the artifact needs {layout.total_bytes:,} bytes, "
            f"{free:,} are free. Free some space or choose another destination.",
        )
    folder = parent / f"{WORK_NAME}{artifacts.TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.mkdir(folder)
    try:
        for name in layout.files:
            with open(folder / name, "wb") as fh:
                fh.write(layout.headers[name])
                fh.truncate(layout.sizes[name])
        (folder / INDEX_FILE).write_bytes(layout.index)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _check_visible(folder: Path, layout: Layout) -> None:
    index = folder / INDEX_FILE
    if not (index.is_file() and index.stat().st_size == len(layout.index)):
        raise InvalidOptionError(
            f"This rank cannot see rank 0's staging folder {folder}: the ranks do not share that "
            "filesystem. Export to a folder every rank sees (jms.export(model, dest) stages beside "
            "dest), or set TMPDIR to a shared folder before jms.stage."
        )


def _save(coll: Collective, tensors: dict[str, torch.Tensor], folder: Path, layout: Layout,
          progress: Progress) -> None:  # fmt: skip
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner

    progress("export", 0.1)
    dcp.save(dict(tensors), storage_writer=LayoutWriter(folder, layout),
             planner=DefaultSavePlanner(), process_group=coll.group)  # fmt: skip


def _hash_share(
    folder: Path, layout: Layout, coll: Collective, progress: Progress
) -> dict[str, str]:
    """sha256 of every world-size-th file, then its fsync, so the ranks hash and sync in parallel.

    The files are read back (each holds bytes from every rank); while they are hashed, the disk
    writes out what the writers already handed to it.
    """
    progress("hash", 0.5)
    files = [*layout.files, INDEX_FILE]
    hashes = {}
    for name in files[coll.rank :: coll.world_size]:
        path = folder / name
        hashes[name] = sha256_overlapped(path)
        artifacts._fsync_file(path)
    return hashes


def sha256_overlapped(path: Path, chunk: int = 8 * 2**20) -> str:
    """``hashing.sha256_file``, reading the next chunk while a thread hashes this one."""
    digest = hashlib.sha256()
    buffers = [bytearray(chunk), bytearray(chunk)]
    pending = None
    with open(path, "rb", buffering=0) as fh, ThreadPoolExecutor(1) as pool:
        for turn in itertools.count():
            buffer = buffers[turn % 2]  # hashed two turns ago: free again
            size = fh.readinto(buffer)
            if pending is not None:
                pending.result()
            if not size:
                break
            pending = pool.submit(digest.update, memoryview(buffer)[:size])
    return digest.hexdigest()


def parity_again(coll: Collective, folder: Path, layout: Layout,
            tensors: dict[str, torch.Tensor]) -> ParityReport:  # fmt: skip
    problems = coll.agree(lambda: slice_problems(folder, layout, tensors))
    return parity_report(layout, problems)


def _work_parent(dest: str | Path, format: str) -> Path:
    """The folder the artifact will be written in: where to stage it so that writing is a rename."""
    text = os.path.expanduser(str(dest))
    if artifacts.is_folder_destination(text, ".safetensors" if format == "safetensors" else ""):
        return Path(text)
    return Path(text).parent
