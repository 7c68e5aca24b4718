"""``jms.load_into`` for a sharded model: every rank loads its own slices through DCP.

A collective call (every rank). Before anything is copied, every rank checks the artifact (the
safetensors headers and the index, ``_safetensors_header.check_artifact``) and that its names and
full shapes fit the model (``StateDictMismatchError`` otherwise, the model unchanged); with a
manifest, the ranks hash every world-size-th file in parallel and compare the artifact's sha256 with
the manifest's (``IntegrityError``). Then ``torch.distributed.checkpoint.load`` with
``ArtifactReader`` copies into each rank's shards exactly the block it holds, read with the
safetensors library's ``get_slice`` (no rank reads a whole tensor it does not hold). Works for any
safetensors artifact: a single file, or a folder written by one process or by many. safetensors
holds no code, so ``trusted`` changes nothing here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageReader

from .. import hashing
from ..errors import IntegrityError, InvalidOptionError
from ..formats._safetensors_header import check_artifact
from ..formats.safetensors_format import INDEX_FILE, files_and_aliases
from ..load_checks import artifact_path, check_fits, readable
from ..manifest import read_manifest
from ..options import check_flag
from ._collective import Collective, check_timeout, joined


def load_into_sharded(model: torch.nn.Module, path: str | Path, *, strict: bool = True,
                      map_location: Any = None, trusted: bool = False,
                      timeout: float | None = None) -> Any:  # fmt: skip
    """Load a safetensors artifact into the sharded ``model``; returns missing/unexpected keys.

    ``map_location`` must be left unset: each rank loads into its shards, where they are.
    """
    seconds = check_timeout(timeout)
    with joined("jms.load_into", seconds) as coll:
        checked: list[_Checked] = []
        coll.agree(lambda: checked.append(_check(model, path, strict, map_location, trusted)))
        artifact = checked[0]
        if artifact.manifest is not None:
            shares = coll.agree(lambda: _hash_share(artifact.path, coll))
            _check_sha256(artifact, shares)
        coll.agree(lambda: _load(coll, artifact))
    from torch.nn.modules.module import _IncompatibleKeys

    return _IncompatibleKeys(artifact.missing, artifact.unexpected)


class _Checked:
    """An artifact checked against a model: its files, tensor names, aliases and what to load."""

    def __init__(self, path: Path, manifest: dict | None, files: list[Path],
                 shapes: dict[str, tuple[int, ...]], aliases: dict[str, str]) -> None:  # fmt: skip
        self.path, self.manifest, self.files = path, manifest, files
        self.shapes, self.aliases = shapes, aliases
        self.targets: dict[str, torch.Tensor] = {}  # artifact tensor name -> model tensor
        self.copies: list[tuple[torch.Tensor, str]] = []  # (model tensor, artifact tensor name)
        self.missing: list[str] = []
        self.unexpected: list[str] = []


def _check(model: torch.nn.Module, path: Any, strict: Any, map_location: Any,
           trusted: Any) -> _Checked:  # fmt: skip
    strict = check_flag("strict", strict)
    check_flag("trusted", trusted)
    if map_location is not None:
        raise InvalidOptionError(
            "map_location does not apply to a sharded model: each rank loads its slices into its "
            "shards, where they are. Leave it unset."
        )
    path = artifact_path(path)
    manifest = read_manifest(path)
    if manifest is not None and manifest.get("format") != "safetensors":
        raise InvalidOptionError(
            f"{path} is a {manifest.get('format')!r} artifact; a sharded model loads safetensors "
            "artifacts only (export them with format='safetensors')."
        )
    artifact = readable(path, "a safetensors artifact", lambda: _read_headers(path, manifest))
    _match(model, artifact, strict)
    return artifact


def _read_headers(path: Path, manifest: dict | None) -> _Checked:
    from safetensors import safe_open

    check_artifact(path, INDEX_FILE)
    files, aliases = files_and_aliases(path)
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            shapes.update({k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()})  # noqa: SIM118 (safe_open is not iterable)
    return _Checked(path, manifest, files, shapes, aliases or {})


def _match(model: torch.nn.Module, artifact: _Checked, strict: bool) -> None:
    """Keys and full shapes must fit (``StateDictMismatchError``); then plan what goes where."""
    shapes = {**artifact.shapes}
    shapes.update({a: shapes[o] for a, o in artifact.aliases.items() if o in shapes})
    metas = {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}
    check_fits(model, metas, strict, artifact.path)
    full = model.state_dict(keep_vars=True)
    artifact.missing = [k for k in full if k not in shapes]
    artifact.unexpected = sorted(k for k in shapes if k not in full)
    for name, tensor in full.items():
        source = artifact.aliases.get(name, name)
        if source not in artifact.shapes:
            continue
        if source not in artifact.targets:
            artifact.targets[source] = tensor
        elif artifact.targets[source] is not tensor:  # tied in the artifact, not in the model
            artifact.copies.append((tensor, source))


def _hash_share(path: Path, coll: Collective) -> dict[str, str]:
    """sha256 of every world-size-th file of the artifact, by its name in the manifest."""
    files = hashing.artifact_files(path) if path.is_dir() else [path]
    root = path if path.is_dir() else path.parent
    return {
        f.relative_to(root).as_posix(): hashing.sha256_file(f)
        for f in files[coll.rank :: coll.world_size]
    }


def _check_sha256(artifact: _Checked, shares: list[dict[str, str]]) -> None:
    hashes = {name: digest for share in shares for name, digest in share.items()}
    actual = hashing.combined_sha256(artifact.path, hashes)
    expected = artifact.manifest.get("sha256") if artifact.manifest else None
    if actual != expected:
        raise IntegrityError(
            f"{artifact.path} does not match its manifest: sha256 {actual[:12]}... was expected to "
            f"be {str(expected)[:12]}.... The files were changed or damaged; export them again."
        )


def _load(coll: Collective, artifact: _Checked) -> None:
    import torch.distributed.checkpoint as dcp

    reader = ArtifactReader(artifact.files)
    dcp.load(dict(artifact.targets), storage_reader=reader, process_group=coll.group)
    with torch.no_grad():
        for tensor, source in artifact.copies:  # names tied in the artifact but not in the model
            tensor.copy_(artifact.targets[source])


class ArtifactReader(HuggingFaceStorageReader):
    """DCP's safetensors reader over exactly the artifact's files (not every file in the folder)."""

    def __init__(self, files: list[Path]) -> None:
        super().__init__(path=str(files[0].parent))
        self.files = [str(f) for f in files]

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        """Every tensor whole, in one chunk, in the file the artifact's index names."""
        from safetensors import safe_open
        from torch.distributed.checkpoint._hf_utils import _HFStorageInfo
        from torch.distributed.checkpoint.metadata import (
            ChunkStorageMetadata,
            Metadata,
            MetadataIndex,
            StorageMeta,
            TensorProperties,
            TensorStorageMetadata,
        )

        tensors, storage = {}, {}
        for file in self.files:
            with safe_open(file, framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                    part = handle.get_slice(key)
                    shape = torch.Size(part.get_shape())
                    dtype = _dtype(part.get_dtype())
                    origin = torch.Size([0] * len(shape))
                    chunk = ChunkStorageMetadata(offsets=origin, sizes=shape)
                    tensors[key] = TensorStorageMetadata(
                        TensorProperties(dtype=dtype), shape, [chunk]
                    )
                    storage[MetadataIndex(fqn=key, offset=origin)] = _HFStorageInfo(
                        file, shape, dtype
                    )
        metadata = Metadata(state_dict_metadata=tensors, storage_data=storage)
        metadata.storage_meta = StorageMeta(load_id=self.load_id)
        return metadata


def _dtype(name: str) -> torch.dtype:
    from safetensors.torch import _getdtype

    return _getdtype(name)
