"""One rank of a torchrun-style test job over CPU processes (gloo).

``python -m tests.distributed._worker JOB OUT`` with ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` in the environment, as ``torchrun`` sets them. Each job runs its scenarios in
order on every rank and writes ``OUT/rank<r>.json``: scenario -> ``{"ok": value}`` or
``{"error": class name, "message": ...}``. The tests read those files (``test_sharded.py``).
"""

from __future__ import annotations

import errno
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

import jupyter_modelsave as jms
from tests.distributed import _models as models

SHARD = models.MAX_SHARD_SIZE


def attempt(step: Any) -> dict[str, Any]:
    try:
        return {"ok": step()}
    except Exception as err:
        return {
            "error": type(err).__name__,
            "message": str(err),
            "mro": [c.__name__ for c in type(err).__mro__],
        }


def fsdp(mesh: Any, seed: int = 0, make: Any = models.mlp) -> torch.nn.Module:
    model = make(seed)
    if not getattr(model, "tied", False):  # a tied weight stays in the root's unit
        for layer in model.children():
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def tensor_parallel(mesh: Any, seed: int = 0) -> torch.nn.Module:
    model = models.mlp(seed)
    return parallelize_module(model, mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.full_tensor() if hasattr(v, "full_tensor") else v
        for k, v in model.state_dict().items()
    }


def equals_reference(model: torch.nn.Module, seed: int = 0) -> bool:
    reference = models.mlp(seed).state_dict()
    full = full_state(model)
    return full.keys() == reference.keys() and all(
        full[k].dtype == v.dtype and torch.equal(full[k], v) for k, v in reference.items()
    )


def export(model: torch.nn.Module, dest: Path, name: str, **options: Any) -> str:
    if options.setdefault("format", "safetensors") == "safetensors":
        options["max_shard_size"] = SHARD
    return str(jms.export(model, f"{dest}/", name=name, **options))


def job_two(out: Path) -> dict[str, Any]:
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (2,))
    dest = out / "artifacts"
    results: dict[str, Any] = {}
    model = fsdp(mesh)
    results["fsdp"] = attempt(lambda: export(model, dest, "fsdp"))
    results["find_models"] = attempt(lambda: jms.find_models({"model": model})[0].to_dict())
    results["tp_stage"] = attempt(lambda: _stage_then_write(tensor_parallel(mesh), dest))
    results["tied"] = attempt(lambda: export(fsdp(mesh, make=models.tied), dest, "tied"))
    fresh = fsdp(mesh, seed=1)
    results["load_into"] = attempt(lambda: str(jms.load_into(fresh, results["fsdp"]["ok"])))
    results["load_into_equal"] = equals_reference(fresh)
    results["load_into_tp"] = attempt(lambda: _load_tp(mesh, results["fsdp"]["ok"]))
    wider = fsdp(mesh, make=models.wider)
    before = {k: v.clone() for k, v in full_state(wider).items()}
    results["load_into_mismatch"] = attempt(lambda: jms.load_into(wider, results["fsdp"]["ok"]))
    results["mismatch_unchanged"] = all(
        torch.equal(v, before[k]) for k, v in full_state(wider).items()
    )
    results["load_into_damaged"] = attempt(lambda: _load_damaged(mesh, results["fsdp"]["ok"], out))
    import torch.distributed.checkpoint as dcp

    dcp.save({"model": model.state_dict(), "step": 3}, checkpoint_id=str(out / "dcp"))
    differing = fsdp(mesh)
    if rank == 1:
        differing.scale.add_(1.0)  # a plain buffer every rank should hold identically
    results["parity_failure"] = attempt(lambda: export(differing, out / "parity", "net"))
    results["rank_failure"] = attempt(lambda: _fail_on_rank_1(model, out / "failed"))
    results["other_model"] = attempt(
        lambda: export(
            fsdp(mesh, make=models.mlp if rank == 0 else models.wider), out / "other", "net"
        )
    )
    x = torch.randn(3, 6)
    onnx = {"format": "onnx", "example_inputs": x}
    results["onnx_refused"] = attempt(lambda: export(model, dest, "net", **onnx))
    results["onnx_gathered"] = attempt(lambda: export(model, dest, "fsdp", **onnx, gather=True))
    results["partial"] = _partial_call(model, out / "partial", rank)
    return results


def _stage_then_write(model: torch.nn.Module, dest: Path) -> dict[str, Any]:
    staged = jms.stage(model, format="safetensors", name="tp", max_shard_size=SHARD)
    again = staged.verify()
    path = staged.write(f"{dest}/")
    staged.discard()
    return {
        "path": str(path),
        "sha256": staged.sha256,
        "passed": staged.report.passed and again.passed,
    }


def _load_tp(mesh: Any, path: str) -> bool:
    model = tensor_parallel(mesh, seed=1)
    jms.load_into(model, path)
    return equals_reference(model)


def _load_damaged(mesh: Any, path: str, out: Path) -> str:
    """A copy of the artifact with one byte changed in a shard file, made by rank 0."""
    damaged = out / "damaged" / Path(path).name
    if dist.get_rank() == 0:
        shutil.copytree(path, damaged)
        shutil.copy(f"{path}.json", f"{damaged}.json")
        shard = sorted(damaged.glob("model-*.safetensors"))[-1]
        data = bytearray(shard.read_bytes())
        data[-1] ^= 1
        shard.write_bytes(bytes(data))
    dist.barrier()
    return str(jms.load_into(fsdp(mesh, seed=1), damaged))


def _fail_on_rank_1(model: torch.nn.Module, dest: Path) -> str:
    from jupyter_modelsave.core.distributed import _writer

    real = _writer.write_chunk

    def failing(*args: Any, **kwargs: Any) -> int:
        if dist.get_rank() == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    with mock.patch.object(_writer, "write_chunk", failing):
        return export(model, dest, "net")


def _partial_call(model: torch.nn.Module, dest: Path, rank: int) -> dict[str, Any]:
    """Rank 0 exports; rank 1 never does (it sleeps past rank 0's timeout, then leaves)."""
    if rank != 0:
        time.sleep(4)
        return {"ok": "did not call"}
    start = time.monotonic()
    result = attempt(lambda: export(model, dest, "net", timeout=2))
    result["seconds"] = time.monotonic() - start
    return result


def job_four(out: Path) -> dict[str, Any]:
    dest = out / "artifacts"
    results: dict[str, Any] = {}
    mesh = init_device_mesh("cpu", (4,))
    results["uneven"] = attempt(lambda: export(fsdp(mesh), dest, "uneven"))  # 5 rows over 4 ranks
    mesh_2d = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    model = tensor_parallel(mesh_2d["tp"])
    for layer in (model[0], model[2], model):
        fully_shard(layer, mesh=mesh_2d["dp"])
    results["2d"] = attempt(lambda: export(model, dest, "twod"))
    fresh = tensor_parallel(mesh_2d["tp"], seed=1)
    for layer in (fresh[0], fresh[2], fresh):
        fully_shard(layer, mesh=mesh_2d["dp"])
    results["2d_load_into"] = attempt(lambda: str(jms.load_into(fresh, results["uneven"]["ok"])))
    results["2d_load_into_equal"] = equals_reference(fresh)
    return results


def job_cuda(out: Path) -> dict[str, Any]:
    """One rank, shards on the GPU: the writer stages them through a host buffer."""
    mesh = init_device_mesh("cuda", (dist.get_world_size(),))
    model = models.mlp(0).cuda()
    for layer in (model[0], model[2], model):
        fully_shard(layer, mesh=mesh)
    results = {"cuda": attempt(lambda: export(model, out / "artifacts", "cuda"))}
    fresh = models.mlp(1).cuda()
    for layer in (fresh[0], fresh[2], fresh):
        fully_shard(layer, mesh=mesh)
    results["cuda_load_into"] = attempt(lambda: str(jms.load_into(fresh, results["cuda"]["ok"])))
    results["cuda_equal"] = all(
        torch.equal(v.cpu(), models.mlp(0).state_dict()[k]) for k, v in full_state(fresh).items()
    )
    return results


JOBS = {"two": job_two, "four": job_four, "cuda": job_cuda}


def main() -> None:
    job, out = sys.argv[1], Path(sys.argv[2])
    dist.init_process_group("cpu:gloo,cuda:nccl" if job == "cuda" else "gloo")
    results = JOBS[job](out)
    (out / f"rank{dist.get_rank()}.json").write_text(json.dumps(results, default=str))
    if job != "two":  # after the partial call the default group may be stuck: just leave
        dist.barrier()  # no rank tears the group down while a peer still receives from it
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
