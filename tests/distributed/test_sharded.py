"""Sharded models (FSDP2, tensor parallel) exported, loaded and converted by torchrun-style jobs.

Two jobs of CPU processes over gloo run every scenario once (``_worker.py``): 2 ranks (FSDP2, a
tensor-parallel MLP, tied weights, load_into, a DCP checkpoint, a parity failure, a rank failure,
ranks holding other models, ONNX with and without gather, and last a call made on one rank only)
and 4 ranks (uneven FSDP2 shards, a 2-D FSDP2 x tensor-parallel mesh). The tests below read what
each rank returned and check the files in this process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import jupyter_modelsave as jms
from jupyter_modelsave.core import hashing

from . import _models as models

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
INDEX = "model.safetensors.index.json"


def run_job(job: str, world: int, out: Path, timeout: float = 600) -> list[dict]:
    """Start ``world`` ranks as torchrun would (env:// rendezvous); every rank's results."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": str(world), "OMP_NUM_THREADS": "1"}  # fmt: skip
    command = [sys.executable, "-m", "tests.distributed._worker", job, str(out)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    ranks = [
        subprocess.Popen(
            command, cwd=ROOT, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, **pipes
        )
        for r in range(world)
    ]
    try:
        logs = [rank.communicate(timeout=timeout)[0] for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
    assert all(rank.returncode == 0 for rank in ranks), "\n".join(logs)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("two")
    return out, run_job("two", 2, out)


@pytest.fixture(scope="module")
def four(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("four")
    return out, run_job("four", 4, out)


def same_on_every_rank(results: list[dict], key: str) -> str:
    values = [r[key] for r in results]
    assert all("ok" in v for v in values), values
    assert len({json.dumps(v["ok"]) for v in values}) == 1, values
    return values[0]["ok"]


def unsharded_export(model: torch.nn.Module, folder: Path, name: str) -> Path:
    return jms.export(model, f"{folder}/", format="safetensors", name=name,
                      max_shard_size=models.MAX_SHARD_SIZE)  # fmt: skip


def nothing_in(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def assert_bitwise(state: dict, reference: dict) -> None:
    assert state.keys() == reference.keys()
    for key, tensor in reference.items():
        assert state[key].dtype == tensor.dtype and torch.equal(state[key], tensor), key


def test_fsdp2_export_is_the_unsharded_models_artifact_byte_for_byte(two, tmp_path):
    _out, results = two
    path = Path(same_on_every_rank(results, "fsdp"))
    # the same name, so the same sha256, as the unsharded model's export
    assert path.name == unsharded_export(models.mlp(0), tmp_path, "fsdp").name
    assert path.is_dir() and (path / INDEX).is_file()
    assert len(list(path.glob("model-*-of-*.safetensors"))) > 1  # several files, full shapes
    assert_bitwise(jms.load(path), models.mlp(0).state_dict())


def test_manifest_written_once_holds_every_files_sha256_world_size_and_mesh(two):
    _out, results = two
    path = Path(same_on_every_rank(results, "fsdp"))
    manifest = json.loads(Path(f"{path}.json").read_text())
    assert manifest["files"] == hashing.file_hashes(path)
    assert manifest["sha256"] == hashing.sha256_of(path)
    assert manifest["distributed"]["world_size"] == 2
    assert manifest["distributed"]["mesh"]["shape"] == [2]
    assert manifest["exporter"] == "torch.distributed.checkpoint"
    assert manifest["parity"]["passed"] and manifest["parity"]["kind"] == "weights"
    assert len(manifest["parity"]["outputs"]) == len(models.mlp(0).state_dict())
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_tensor_parallel_layer_staged_verified_and_written_collectively(two, tmp_path):
    _, results = two
    staged = same_on_every_rank(results, "tp_stage")
    assert staged["passed"]
    assert Path(staged["path"]).name == unsharded_export(models.mlp(0), tmp_path, "tp").name


def test_tied_weights_are_saved_once_as_in_the_unsharded_export(two, tmp_path):
    _, results = two
    path = Path(same_on_every_rank(results, "tied"))
    # one file: the unsharded export writes it alone, the sharded one in a folder, same bytes
    single = unsharded_export(models.tied(0), tmp_path, "tied")
    assert [p.name for p in path.iterdir()] == ["model-00001-of-00001.safetensors", INDEX]
    assert (path / "model-00001-of-00001.safetensors").read_bytes() == single.read_bytes()
    state = jms.load(path)
    assert state["head.weight"] is state["embed.weight"]
    assert_bitwise(state, models.tied(0).state_dict())


def test_find_models_lists_the_sharded_model_with_its_full_size(two):
    _, results = two
    info = same_on_every_rank(results, "find_models")
    reference = jms.find_models({"model": models.mlp(0)})[0]
    assert (info["num_params"], info["size_bytes"]) == (reference.num_params, reference.size_bytes)
    assert info["sharding"] == "sharded over 2 ranks"
    assert reference.sharding is None


def test_load_into_sharded_models_loads_each_ranks_slices(two):
    _, results = two
    assert same_on_every_rank(results, "load_into") == "<All keys matched successfully>"
    assert all(r["load_into_equal"] for r in results)  # the FSDP2 model, from the FSDP2 artifact
    assert same_on_every_rank(results, "load_into_tp") is True  # another sharding of it


def test_load_into_a_sharded_model_checks_shapes_and_hashes_on_every_rank(two):
    _, results = two
    mismatch = [r["load_into_mismatch"] for r in results]
    assert [m.get("error") for m in mismatch] == ["StateDictMismatchError"] * 2, mismatch
    assert "another shape" in mismatch[0]["message"]
    assert all(r["mismatch_unchanged"] for r in results)  # the model is left as it was
    damaged = [r["load_into_damaged"] for r in results]
    assert [d.get("error") for d in damaged] == ["IntegrityError"] * 2, damaged


def test_load_into_a_plain_model_from_a_sharded_artifact(two):
    _, results = two
    model = models.mlp(seed=1)
    jms.load_into(model, same_on_every_rank(results, "fsdp"))
    assert_bitwise(model.state_dict(), models.mlp(0).state_dict())


def test_convert_a_dcp_checkpoint_written_by_the_job(two, tmp_path):
    out, results = two
    path = jms.convert(out / "dcp", f"{tmp_path}/", prefix="model.", name="fsdp",
                       max_shard_size=models.MAX_SHARD_SIZE)  # fmt: skip
    # the checkpoint of the FSDP2 model becomes the artifact its export gave
    assert path.name == Path(same_on_every_rank(results, "fsdp")).name
    assert_bitwise(jms.load(path), models.mlp(0).state_dict())
    manifest = json.loads(Path(f"{path}.json").read_text())
    assert manifest["source"]["skipped"] == ["step"] and manifest["parity"]["passed"]


def test_parity_finds_a_rank_whose_copy_of_a_replicated_buffer_differs(two):
    out, results = two
    errors = [r["parity_failure"] for r in results]
    assert [e.get("error") for e in errors] == ["ParityError", "ParityError"], errors
    assert all("scale" in e["message"] for e in errors)
    assert nothing_in(out / "parity")


def test_a_failure_on_one_rank_raises_on_every_rank_and_leaves_nothing(two):
    out, results = two
    errors = [r["rank_failure"] for r in results]
    assert [e.get("error") for e in errors] == ["WriteError", "WriteError"], errors
    assert "rank 1" in errors[0]["message"]  # rank 0 says which rank failed
    assert nothing_in(out / "failed")  # no artifact, no manifest, no temporary


def test_ranks_holding_different_models_are_refused_before_writing(two):
    out, results = two
    errors = [r["other_model"] for r in results]
    assert [e.get("error") for e in errors] == ["InvalidOptionError"] * 2, errors
    assert "rank" in errors[0]["message"]
    assert nothing_in(out / "other")


def test_onnx_of_a_sharded_model_needs_gather_and_says_the_memory(two, tmp_path):
    _, results = two
    for result in results:
        assert result["onnx_refused"]["error"] == "InvalidOptionError"
        assert "gather=True" in result["onnx_refused"]["message"]
        assert (
            f"{sum(t.numel() * 4 for t in models.mlp(0).state_dict().values()):,} bytes"
            in (result["onnx_refused"]["message"])
        )
    path = Path(same_on_every_rank(results, "onnx_gathered"))
    manifest = json.loads(Path(f"{path}.json").read_text())
    assert path.suffix == ".onnx" and manifest["parity"]["passed"]
    assert "gathered to rank 0" in manifest["warnings"][0]


def test_export_called_on_one_rank_only_times_out_instead_of_hanging(two):
    out, results = two
    partial = results[0]["partial"]
    assert partial["error"] == "DistributedTimeoutError", partial
    assert "every rank" in partial["message"] and "timeout" in partial["message"]
    assert nothing_in(out / "partial")


def test_four_ranks_uneven_fsdp2_shards_and_a_2d_mesh(four, tmp_path):
    _, results = four
    uneven = Path(same_on_every_rank(results, "uneven"))  # 5 rows: 2 + 2 + 1 + 0
    assert uneven.name == unsharded_export(models.mlp(0), tmp_path, "uneven").name
    twod = Path(same_on_every_rank(results, "2d"))
    assert twod.name == unsharded_export(models.mlp(0), tmp_path, "twod").name
    manifest = json.loads(Path(f"{twod}.json").read_text())
    assert manifest["distributed"]["mesh"]["dim_names"] in (["dp"], ["tp"], ["dp", "tp"])
    assert_bitwise(jms.load(twod), models.mlp(0).state_dict())
    assert same_on_every_rank(results, "2d_load_into") == "<All keys matched successfully>"
    assert all(r["2d_load_into_equal"] for r in results)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_shards_on_the_gpu_are_written_and_loaded(tmp_path):
    results = run_job("cuda", 1, tmp_path)
    path = Path(same_on_every_rank(results, "cuda"))
    assert path.name == unsharded_export(models.mlp(0), tmp_path / "ref", "cuda").name
    assert same_on_every_rank(results, "cuda_load_into") == "<All keys matched successfully>"
    assert results[0]["cuda_equal"]
