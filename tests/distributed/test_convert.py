"""jms.convert: a DCP checkpoint folder into a safetensors artifact, and hostile or broken folders.

The checkpoints here are written by ``dcp.save`` in this process (no process group: one chunk per
tensor); ``test_sharded.py`` converts one written by a 2-rank FSDP2 job (chunks from every rank).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

import jupyter_modelsave as jms

from . import _models as models

SHARD = models.MAX_SHARD_SIZE


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "step-100"
    model = models.mlp(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 6)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optim": optimizer.state_dict(), "epoch": 3}
    torch.manual_seed(0)  # the model's weights as models.mlp(0) built them
    state["model"] = models.mlp(0).state_dict()
    dcp.save(state, checkpoint_id=str(folder), no_dist=True)
    return folder


def copy_of(checkpoint: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(checkpoint, tmp_path / "copy"))


def rewrite_metadata(folder: Path, change) -> None:
    metadata = pickle.loads((folder / ".metadata").read_bytes())
    change(metadata)
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))


def test_convert_gives_the_models_own_export_and_lists_what_it_left_out(checkpoint, tmp_path):
    path = jms.convert(
        checkpoint, f"{tmp_path}/", prefix="model.", max_shard_size=SHARD, name="net"
    )
    single = jms.export(models.mlp(0), f"{tmp_path}/ref/", format="safetensors", name="net",
                        max_shard_size=SHARD)  # fmt: skip
    assert path.name == single.name  # same sha256: byte for byte the same files
    state = jms.load(path)
    for key, tensor in models.mlp(0).state_dict().items():
        assert state[key].dtype == tensor.dtype and torch.equal(state[key], tensor)
    manifest = json.loads(Path(f"{path}.json").read_text())
    assert manifest["parity"]["passed"] and manifest["exporter"].startswith("torch.distributed")
    assert "epoch" in manifest["source"]["skipped"]
    assert any(k.startswith("optim.") for k in manifest["source"]["skipped"])


def test_without_prefix_every_tensor_is_converted_and_name_is_the_folders(checkpoint, tmp_path):
    path = jms.convert(checkpoint, f"{tmp_path}/")
    assert path.name.startswith("step-100_v1.0.0_")
    state = jms.load(path)
    assert "model.0.weight" in state and any(k.startswith("optim.state.") for k in state)
    assert "epoch" not in state


def test_an_existing_destination_is_not_overwritten(checkpoint, tmp_path):
    first = jms.convert(checkpoint, f"{tmp_path}/", prefix="model.")
    with pytest.raises(jms.ArtifactExistsError):
        jms.convert(checkpoint, first, prefix="model.")
    again = jms.convert(checkpoint, first, prefix="model.", overwrite=True)
    assert again == first and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [first.name, f"{first.name}.json"]
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"format": "onnx"}, "'safetensors' only"),
        ({"prefix": "nothing."}, "no tensors"),
        ({"prefix": 3}, "prefix"),
        ({"max_shard_size": "lots"}, "max_shard_size"),
    ],
)
def test_bad_options_are_refused(checkpoint, tmp_path, call, message):
    with pytest.raises(jms.InvalidOptionError, match=message):
        jms.convert(checkpoint, f"{tmp_path}/", **call)
    assert not any(tmp_path.iterdir())


def test_a_source_that_is_not_a_folder_is_refused(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    for source in (tmp_path / "missing", tmp_path / "file", None, "\0"):
        with pytest.raises(jms.InvalidOptionError, match="not a folder"):
            jms.convert(source, f"{tmp_path}/out/")


HOSTILE = [
    ("os", "system"),
    ("builtins", "eval"),
    ("subprocess", "Popen"),
    ("torch", "load"),  # torch, but not a dtype
    ("torch.distributed.checkpoint.filesystem", "FileSystemReader"),  # DCP, but not metadata
    ("pathlib", "Path.write_text"),  # an attribute path inside an allowed module
]


class _Payload:
    def __init__(self, module: str, name: str, marker: Path) -> None:
        self.target, self.marker = (module, name), marker

    def __reduce__(self):
        import importlib

        module, name = self.target
        target = importlib.import_module(module)
        for part in name.split("."):
            target = getattr(target, part)
        return target, (f"touch {self.marker}",)


@pytest.mark.parametrize(("module", "name"), HOSTILE)
def test_a_metadata_pickle_asking_for_code_is_refused_without_running_it(
    checkpoint, tmp_path, module, name
):
    folder = copy_of(checkpoint, tmp_path)
    marker = tmp_path / "ran"
    (folder / ".metadata").write_bytes(pickle.dumps(_Payload(module, name, marker), protocol=4))
    with pytest.raises(jms.UnsafeArtifactError, match=r"trusted=True") as info:
        jms.convert(folder, f"{tmp_path}/out/")
    assert name.rsplit(".")[-1] in str(info.value)  # names what it asked for
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_trusted_reads_the_metadata_with_plain_pickle(checkpoint, tmp_path):
    path = jms.convert(checkpoint, f"{tmp_path}/", prefix="model.", trusted=True)
    assert jms.load(path).keys() == models.mlp(0).state_dict().keys()


def _first_tensor_entry(metadata):
    return next(k for k in metadata.storage_data if k.fqn.startswith("model."))


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda f: os.remove(next(f.glob("*.distcp"))), "is missing"),
        (lambda f: os.truncate(next(f.glob("*.distcp")), 100), "shorter than"),
        (lambda f: os.remove(f / ".metadata"), "metadata file is missing"),
        (lambda f: (f / ".metadata").write_bytes(b"not a pickle"), "cannot be read"),
        (lambda f: (f / ".metadata").write_bytes(pickle.dumps({"a": 1})), "not DCP's Metadata"),
        (
            lambda f: rewrite_metadata(f, lambda m: m.storage_data.pop(_first_tensor_entry(m))),
            "no stored data",
        ),
        (
            lambda f: rewrite_metadata(
                f,
                lambda m: setattr(m.storage_data[_first_tensor_entry(m)], "relative_path", "../x"),
            ),
            "not a file of the folder",
        ),
        (
            lambda f: rewrite_metadata(
                f,
                lambda m: setattr(
                    m.state_dict_metadata["model.0.weight"], "size", torch.Size([9, 6])
                ),
            ),
            "do not cover",
        ),
    ],
    ids=[
        "shard missing",
        "shard truncated",
        "no metadata",
        "garbage metadata",
        "not metadata",
        "chunk without data",
        "path outside",
        "chunks leave a gap",
    ],
)
def test_incomplete_or_damaged_checkpoints_are_integrity_errors(
    checkpoint, tmp_path, breakage, message
):
    folder = copy_of(checkpoint, tmp_path)
    breakage(folder)
    with pytest.raises(jms.IntegrityError, match=message):
        jms.convert(folder, f"{tmp_path}/out/", prefix="model.")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
