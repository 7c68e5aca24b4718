"""write(): versioned names, manifest, no overwrite without consent, atomic on crash, load + integrity."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import jupyter_modelsave as jms
from jupyter_modelsave.core import artifacts, hashing
from jupyter_modelsave.core.formats import extensions
from jupyter_modelsave.core.options import artifact_name_from, check_artifact_name

from . import models


@pytest.fixture(scope="module")
def staged():
    torch.manual_seed(0)
    s = jms.stage(models.mlp(), torch.randn(2, 8), name="mlp", dynamic_axes={"input": {0: "batch"}})
    yield s
    s.discard()


def test_nothing_touches_the_destination_before_write(tmp_path, staged):
    assert not (tmp_path / "out").exists()
    assert staged.path.exists() and tmp_path not in staged.path.parents


def test_folder_destination_gets_versioned_names_and_manifest(tmp_path, staged):
    first = staged.write(f"{tmp_path}/out/")
    second = staged.write(f"{tmp_path}/out/")
    assert first.name == f"mlp_v1.0.0_{staged.sha256[:12]}.onnx"
    assert second.name == f"mlp_v1.0.1_{staged.sha256[:12]}.onnx"
    manifest = json.loads((tmp_path / "out" / f"{first.name}.json").read_text())
    assert manifest["sha256"] == hashing.sha256_of(first) == staged.sha256
    assert manifest["size_bytes"] == first.stat().st_size
    assert (manifest["format"], manifest["exporter"], manifest["version"]) == (
        "onnx",
        "dynamo",
        "1.0.0",
    )
    assert manifest["parity"]["passed"] is True
    assert manifest["inputs"][0]["name"] == "input"
    assert manifest["dynamic_axes"] == {"input": {"0": "batch"}}
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["framework"] == "torch"


def test_explicit_name_and_version(tmp_path, staged):
    path = staged.write(tmp_path, name="classifier", version="2.1.0")
    assert re.fullmatch(r"classifier_v2\.1\.0_[0-9a-f]{12}\.onnx", path.name)
    with pytest.raises(jms.InvalidOptionError, match=r"1\.2\.3"):
        staged.write(tmp_path, version="latest")


def test_existing_file_is_not_overwritten_without_consent(tmp_path, staged):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"precious")
    with pytest.raises(jms.ArtifactExistsError, match="overwrite=True"):
        staged.write(target)
    assert target.read_bytes() == b"precious"
    staged.write(target, overwrite=True)
    assert hashing.sha256_of(target) == staged.sha256


def test_unwritable_destination_raises_write_error(tmp_path, staged):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(jms.WriteError, match="Cannot create the folder"):
        staged.write(blocker / "sub" / "model.onnx")


def test_not_enough_space_is_refused_before_writing(tmp_path, staged, monkeypatch):
    monkeypatch.setattr(artifacts.shutil, "disk_usage", lambda p: SimpleNamespace(free=10))
    with pytest.raises(jms.WriteError, match="Not enough space"):
        staged.write(tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_load_returns_an_ort_session_that_matches_the_model(tmp_path):
    import numpy as np

    net = models.mlp().eval()
    path = jms.export(net, tmp_path, torch.randn(2, 8), dynamic_axes={"input": {0: "batch"}})
    session = jms.load(path)
    x = torch.randn(5, 8)
    (out,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        assert np.allclose(out, net(x).numpy(), atol=1e-5)


def test_export_names_the_file_after_the_callers_variable(tmp_path):
    classifier = models.mlp()
    path = jms.export(classifier, tmp_path, torch.randn(1, 8))
    assert path.name.startswith("classifier_v1.0.0_")


@pytest.mark.parametrize("fmt", ["onnx", "safetensors"])
def test_stage_names_the_artifact_after_the_callers_variable(tmp_path, fmt):
    # through every wrapper around stage (decorators included), the caller's variable is found
    classifier = models.mlp()
    staged = jms.stage(classifier, torch.randn(1, 8), format=fmt)
    assert staged.write(tmp_path).name.startswith("classifier_v1.0.0_")


@given(st.text(max_size=300))
@settings(max_examples=200, derandomize=True)
def test_a_name_made_from_any_identifier_is_a_usable_artifact_name(identifier):
    assert check_artifact_name(artifact_name_from(identifier))


@pytest.mark.parametrize(
    ("identifier", "name"),
    [("modèle", "modele"), ("_hidden", "hidden"), ("名前", "model"), ("Ça_va", "Ca_va"),
     ("net.v2", "net.v2"), ("x" * 300, "x" * 128), ("__", "model")],
)  # fmt: skip
def test_a_default_name_keeps_what_a_file_name_can_hold(identifier, name):
    assert artifact_name_from(identifier) == name


class _PrivateNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.linear(x)


def test_a_model_bound_to_an_accented_name_or_of_a_private_class_is_staged_with_a_usable_name(
    tmp_path,
):
    # Given a variable with an accent, and a model no public name holds whose class is private
    modèle = models.mlp()  # a name a French-speaking user writes
    # When each is staged without a name, then each is written under a name derived from it
    written = jms.stage(modèle, format="safetensors").write(tmp_path)
    assert written.name.startswith("modele_v1.0.0_")
    unnamed = jms.stage(_PrivateNet(), format="safetensors").write(tmp_path)
    assert unnamed.name.startswith("privatenet_v1.0.0_")


# (format, its extension): every registered PyTorch format, and an extension no format uses
EXTENSIONS = {"onnx": ".onnx", "torchscript": ".pt", "torch_export": ".pt2",
              "safetensors": ".safetensors", "state_dict": ".pt", "checkpoint": ".pt"}  # fmt: skip


@pytest.fixture(scope="module")
def staged_formats():
    x = torch.randn(2, 8)
    staged = {fmt: jms.stage(models.mlp(), x, format=fmt, exporter="torchscript")
              if fmt == "onnx" else jms.stage(models.mlp(), x, format=fmt) for fmt in EXTENSIONS}  # fmt: skip
    yield staged
    for s in staged.values():
        s.discard()


@pytest.mark.parametrize("fmt", list(EXTENSIONS))
@pytest.mark.parametrize("other", sorted(extensions()))
def test_a_file_path_with_another_format_s_extension_is_refused(
    tmp_path, staged_formats, fmt, other
):
    # Given a staged artifact and a file path that ends in some format's extension
    target = tmp_path / f"model{other}"
    if other == EXTENSIONS[fmt]:
        # Then its own extension is written as named
        assert staged_formats[fmt].write(target) == target
        return
    # Then another format's extension is refused before anything is written
    with pytest.raises(jms.InvalidOptionError, match=f"this is a {fmt} artifact") as err:
        staged_formats[fmt].write(target)
    assert f"write it to model{EXTENSIONS[fmt]}" in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", list(EXTENSIONS))
def test_a_file_path_named_like_a_manifest_is_refused(tmp_path, staged_formats, fmt):
    # Given a file path ending in .json (x.pt.json is where x.pt's manifest goes)
    target = tmp_path / f"model{EXTENSIONS[fmt]}.json"
    # When the artifact is written there, then it is refused before anything is written
    with pytest.raises(jms.InvalidOptionError, match="a manifest's extension") as err:
        staged_formats[fmt].write(target)
    assert f"write it to model{EXTENSIONS[fmt]}{EXTENSIONS[fmt]}" not in str(err.value)
    assert f"write it to model{EXTENSIONS[fmt]}," in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".bin", ".pth", ".weights", ""])
def test_an_extension_no_format_uses_is_the_user_s_choice(tmp_path, staged_formats, suffix):
    target = tmp_path / f"pytorch_model{suffix}"
    assert staged_formats["state_dict"].write(target) == target
    assert set(jms.load(target)) == set(models.mlp().state_dict())


def test_tampered_artifact_is_refused(tmp_path, staged):
    path = staged.write(tmp_path)
    with open(path, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(jms.IntegrityError, match="does not match its manifest"):
        jms.load(path)


def test_folder_artifact_is_written_and_loaded_as_a_whole(tmp_path):
    wide = torch.nn.Sequential(torch.nn.Linear(64, 64))  # weights over onnx's 1 KiB inline limit
    staged = jms.stage(wide, torch.randn(2, 64), external_data=True, name="big")
    path = staged.write(tmp_path)
    assert path.is_dir() and path.name.endswith(".onnx")
    assert sorted(p.name for p in path.iterdir()) == ["model.onnx", "model.onnx.data"]
    manifest = json.loads(Path(f"{path}.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "model.onnx.data"}
    assert jms.load(path).get_inputs()[0].name == "input"


def test_discard_deletes_the_staged_files_and_blocks_write(tmp_path):
    s = jms.stage(models.mlp(), torch.randn(1, 8), parity=False)
    workdir = s.path.parent
    s.discard()
    assert not workdir.exists()
    with pytest.raises(jms.InvalidOptionError, match="discarded"):
        s.write(tmp_path)


CRASH = textwrap.dedent(
    """
    import errno, os, signal, sys, torch
    import jupyter_modelsave as jms
    from jupyter_modelsave.core import artifacts
    from tests import models

    staged = jms.stage(models.mlp(), torch.randn(2, 8), parity=False, name="crash")

    def half_copy_then_die(src, dst):
        data = open(src, "rb").read()
        with open(dst, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def no_links(src, dst):
        raise OSError(errno.EXDEV, "cross-device link")

    def die(*args):
        os.kill(os.getpid(), signal.SIGKILL)

    if sys.argv[2] == "copying":  # staging on another filesystem: the bytes are copied
        artifacts.os.link = no_links
        artifacts.shutil.copyfile = half_copy_then_die
    else:  # linked, killed before the rename
        artifacts._fsync_file = die
    staged.write(sys.argv[1])
    """
)


@pytest.mark.parametrize("moment", ["copying", "linked"])
def test_a_process_killed_mid_write_leaves_no_partial_artifact(tmp_path, moment):
    dest = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", CRASH, f"{dest}/", moment], capture_output=True, text=True
    )
    assert proc.returncode == -9, proc.stderr
    leftovers = os.listdir(dest)
    assert leftovers and all(
        name.startswith(".") and artifacts.TMP_MARK in name for name in leftovers
    )
    assert not any(name.endswith((".onnx", ".json")) for name in leftovers)
    # the next write to the folder cleans the dead writer's temporary up
    s = jms.stage(models.mlp(), torch.randn(1, 8), parity=False, name="crash")
    path = s.write(dest)
    assert sorted(os.listdir(dest)) == sorted([path.name, f"{path.name}.json"])


def test_writing_links_the_staged_file_when_it_can(tmp_path, staged):
    path = staged.write(tmp_path)
    assert os.path.samefile(path, staged.path)  # same filesystem here: no bytes copied
    staged_inode_links = os.stat(staged.path).st_nlink
    assert staged_inode_links >= 2
