"""safetensors: the model's ``state_dict`` in one ``.safetensors`` file, or shards.

Above ``max_shard_size`` (default ``"5GB"``) the artifact is a folder in the transformers layout:
``model-00001-of-0000N.safetensors`` files and ``model.safetensors.index.json`` (its
``weight_map`` names the shard of every tensor). safetensors refuses tensors that share memory, so
tied weights (the same view under two names, e.g. an LM head tied to the embedding) are saved once
and the other names recorded as aliases in the header; loading puts the one tensor back under
every name. Other storage sharing (different views of one buffer) is saved as separate copies, and
non-contiguous tensors are made contiguous. The header's string metadata holds ``format: pt``
(as transformers writes it), the producer, torch's version, the dtype of every tensor, the
aliases and the user's ``metadata`` as JSON. Each file is written in one pass by
``_safetensors_writer`` (the bytes ``safetensors.torch.save_file`` writes, metadata keys sorted;
CUDA tensors stream through two pinned buffers) and hashed while written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from ..errors import ExportError, InvalidOptionError
from ..version import __version__
from .base import CAST_DTYPES, WEIGHTS, Exported, ExportJob, WeightsFormat

DEFAULT_MAX_SHARD_SIZE = "5GB"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class SafetensorsFormat(WeightsFormat):
    name = "safetensors"
    extension = ".safetensors"
    description = "state_dict in safetensors (sharded above max_shard_size), tied weights kept"
    # fp16/bf16: a cast copy of the floating tensors
    capabilities = dataclasses.replace(WEIGHTS, folder=True, precisions=("fp32", "fp16", "bf16"))

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = set(options) - {"max_shard_size"}
        if unknown:
            raise InvalidOptionError(
                f"format 'safetensors' takes only max_shard_size, not {', '.join(sorted(unknown))}."
            )
        return {"max_shard_size": parse_size(options.get("max_shard_size", DEFAULT_MAX_SHARD_SIZE))}

    def export(self, job: ExportJob) -> Exported:
        """Write the state dict in one pass (``_safetensors_writer``), hashing while writing."""
        tensors, aliases = saveable_tensors(cast_state_dict(job.model.state_dict(), job.precision))
        shards = split_shards(tensors, job.format_options["max_shard_size"])
        extra = {"aliases": aliases, "metadata": job.metadata}
        if len(shards) == 1:
            path = job.workdir / SINGLE_FILE
            digest = _save(tensors, path, _header(tensors, extra))
            return Exported(path, "safetensors", file_hashes={path.name: digest})
        folder = job.workdir / f"artifact{self.extension}"
        folder.mkdir()
        weight_map, hashes = {}, {}
        for i, shard in enumerate(shards, 1):
            file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            hashes[file] = _save(shard, folder / file, _header(shard, extra))
            weight_map.update(dict.fromkeys(shard, file))
        total = sum(_nbytes(t) for t in tensors.values())
        meta = {"total_size": total, **_string_meta(extra)}
        index = json.dumps({"metadata": meta, "weight_map": weight_map}, indent=2).encode()
        (folder / INDEX_FILE).write_bytes(index)
        hashes[INDEX_FILE] = hashlib.sha256(index).hexdigest()
        return Exported(folder, "safetensors", file_hashes=hashes)

    def load(self, path: Path, map_location: Any = "cpu", trusted: bool = False) -> Any:
        """The state dict, with every alias pointing at the same tensor as its original."""
        from safetensors.torch import load_file

        from ._safetensors_header import check_artifact

        path = Path(path)
        check_artifact(path, INDEX_FILE)  # shards inside the folder, sane header lengths
        files, aliases = files_and_aliases(path)
        state: dict[str, torch.Tensor] = {}
        for file in files:
            state.update(load_file(str(file), device=str(map_location)))
        for alias, original in aliases.items():
            state[alias] = state[original]
        return state


def files_and_aliases(path: Path) -> tuple[list[Path], dict[str, str]]:
    """A checked artifact's files, and its ``{alias: original}`` from its index or header."""
    from safetensors import safe_open

    if path.is_dir():
        index = json.loads((path / INDEX_FILE).read_text())
        files = [path / f for f in dict.fromkeys(index["weight_map"].values())]
        return files, json.loads(index.get("metadata", {}).get("aliases", "{}"))
    with safe_open(str(path), framework="pt") as f:
        return [path], json.loads((f.metadata() or {}).get("aliases", "{}"))


def parse_size(value: Any) -> int:
    """Bytes from an int or a string like ``"5GB"``, ``"500MB"``, ``"2GiB"`` (GB = 10**9 bytes)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
        raise InvalidOptionError(
            f"max_shard_size must be a positive number of bytes or a size like '500MB' or '5GB', "
            f"got {value!r}."
        )
    return int(float(match.group(1)) * _UNITS[unit])


def saveable_tensors(
    state_dict: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors safetensors accepts, {alias: original name}) for a state dict.

    A tensor that is the same view as an earlier one (same storage, offset, shape, strides and
    dtype) becomes an alias. Remaining storage sharing is broken by copying; non-contiguous
    tensors are made contiguous.
    """
    seen: dict[tuple, str] = {}
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach()
        key = _view_key(tensor)
        first = name if key is None else seen.setdefault(key, name)
        if first == name:
            tensors[name] = tensor
        else:
            aliases[name] = first
    owners = Counter(_storage(t) for t in tensors.values() if t.numel())
    for name, tensor in tensors.items():
        if tensor.numel() and owners[_storage(tensor)] > 1:
            tensors[name] = tensor.clone(memory_format=torch.contiguous_format)
        elif not tensor.is_contiguous():
            tensors[name] = tensor.contiguous()
    return tensors, aliases


def split_shards(tensors: dict[str, torch.Tensor], limit: int) -> list[dict[str, torch.Tensor]]:
    """Consecutive tensors packed into shards of at most ``limit`` bytes (a bigger tensor alone)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = _nbytes(tensor)
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    return shards


def _save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> str:
    """Write one safetensors file into the work folder; return its sha256.

    No fsync here: a staged file is a temporary, and ``write`` fsyncs it before the rename (the
    writer has already asked the kernel to start writing it back, so that fsync waits for little).
    """
    from ._safetensors_writer import save_file

    try:
        return save_file(tensors, path, metadata, fsync=False).sha256
    except (ValueError, RuntimeError, TypeError) as err:
        raise ExportError(f"safetensors could not save the weights: {err}") from err


def _view_key(tensor: torch.Tensor) -> tuple | None:
    if not tensor.numel():  # empty tensors may all report data pointer 0
        return None
    return (_storage(tensor), tensor.storage_offset(), tuple(tensor.shape), tensor.stride(),
            tensor.dtype)  # fmt: skip


def _storage(tensor: torch.Tensor) -> tuple[str, int]:
    return str(tensor.device), tensor.untyped_storage().data_ptr()


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _header(tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> dict[str, str]:
    dtypes = {n: str(t.dtype).removeprefix("torch.") for n, t in tensors.items()}
    return {"dtypes": json.dumps(dtypes), **_string_meta(extra)}


def _string_meta(extra: dict[str, Any]) -> dict[str, str]:
    return {
        "format": "pt",
        "producer": "jupyter_modelsave",
        "producer_version": __version__,
        "torch_version": str(torch.__version__),
        "aliases": json.dumps(extra["aliases"]),
        "metadata": json.dumps(extra["metadata"]),
    }


def cast_state_dict(state: dict[str, torch.Tensor], precision: str) -> dict[str, torch.Tensor]:
    """Floating tensors cast to ``precision`` (others as they are); one cast per view, so tied
    weights stay one tensor under several names."""
    if precision not in CAST_DTYPES:
        return state
    dtype = getattr(torch, CAST_DTYPES[precision])
    casts: dict[tuple, torch.Tensor] = {}
    result = {}
    for name, tensor in state.items():
        if not tensor.is_floating_point() or tensor.dtype == dtype:
            result[name] = tensor
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
               tensor.stride(), str(tensor.device)) if tensor.numel() else (name,)  # fmt: skip
        if key not in casts:
            casts[key] = tensor.detach().to(dtype)
        result[name] = casts[key]
    return result
