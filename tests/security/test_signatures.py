"""Your own artifacts are trusted without ``trusted=True``; a sha256 alone never is.

Every manifest jupyter_modelsave writes, and every ``to_base64`` string, carries an HMAC-SHA256
of the artifact's sha256 and format under the user's secret key (``core/trust.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

import jupyter_modelsave as jms
from jupyter_modelsave.core import trust

from .. import models


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("own")
    mlp, x = models.mlp(), torch.randn(2, 8)
    return {
        fmt: jms.stage(mlp, x, format=fmt, name=fmt, parity=False).write(folder)
        for fmt in ("torchscript", "torch_export", "safetensors")
    }


def _manifest(path: Path) -> dict:
    return json.loads(Path(f"{path}.json").read_text())


def _copy(path: Path, dest: Path) -> Path:
    shutil.copyfile(path, dest)
    shutil.copyfile(f"{path}.json", f"{dest}.json")
    return dest


@pytest.fixture
def other_user(tmp_path, monkeypatch) -> Path:
    """From here on, the process runs as another user: another secret key."""
    key = tmp_path / "other" / "jupyter_modelsave_secret"
    monkeypatch.setenv(trust.SECRET_ENV, str(key))
    return key


def test_your_own_programs_load_without_trusted(own):
    for fmt in ("torchscript", "torch_export"):
        assert _manifest(own[fmt])["signature"].startswith("hmac-sha256:")
        loaded = jms.load(own[fmt])
        assert loaded is not None
    assert isinstance(jms.load(own["torchscript"]), torch.jit.ScriptModule)
    jms.load_into(models.mlp(), own["torch_export"])


def test_moving_and_renaming_your_artifact_keeps_it_trusted(own, tmp_path):
    moved = _copy(own["torchscript"], tmp_path / "renamed_by_me.pt")
    assert isinstance(jms.load(moved), torch.jit.ScriptModule)


def test_another_users_artifacts_are_not_trusted(own, other_user, tmp_path):
    # Given artifacts signed by the first user, loaded by another one (another key)
    copy = _copy(own["torchscript"], tmp_path / "theirs.pt")
    # Then their programs need trusted=True, and their data formats still load
    with pytest.raises(jms.UnsafeArtifactError, match="trusted=True"):
        jms.load(copy)
    assert set(jms.load(own["safetensors"])) == set(models.mlp().state_dict())
    # And the other user's own writes are signed with their key, made private
    theirs = jms.stage(models.mlp(), torch.randn(2, 8), format="torchscript", parity=False)
    assert isinstance(jms.load(theirs.write(tmp_path / "mine")), torch.jit.ScriptModule)
    assert stat.S_IMODE(other_user.stat().st_mode) == 0o600


def test_a_signature_is_bound_to_the_bytes_and_the_format(own, tmp_path):
    signature = _manifest(own["torchscript"])["signature"]
    # moved onto other bytes (the attacker's own program), it proves nothing
    other = tmp_path / "other.pt"
    torch.jit.save(torch.jit.script(models.mlp()), str(other))
    forged = {"producer": "jupyter_modelsave", "format": "torchscript",
              "sha256": jms.core.hashing.sha256_of(other), "signature": signature}  # fmt: skip
    Path(f"{other}.json").write_text(json.dumps(forged))
    with pytest.raises(jms.UnsafeArtifactError):
        jms.load(other)
    # on the same bytes, declared as another format (another loader), it proves nothing either
    relabelled = _copy(own["torch_export"], tmp_path / "relabelled.pt2")
    manifest = _manifest(relabelled)
    manifest["signature"] = _manifest(own["torchscript"])["signature"]
    Path(f"{relabelled}.json").write_text(json.dumps(manifest))
    with pytest.raises(jms.UnsafeArtifactError):
        jms.load(relabelled)


def test_a_signature_is_an_hmac_under_the_key_not_a_hash(own):
    manifest = _manifest(own["torchscript"])
    digest = manifest["signature"].split(":", 1)[1]
    assert digest != manifest["sha256"]
    assert trust.is_signed(manifest["sha256"], "torchscript", manifest["signature"])
    assert not trust.is_signed(manifest["sha256"], "torch_export", manifest["signature"])
    assert not trust.is_signed("0" * 64, "torchscript", manifest["signature"])
    for junk in (None, 1, "", "hmac-sha256:", "hmac-sha256:é" * 40, digest, ["x"]):
        assert not trust.is_signed(manifest["sha256"], "torchscript", junk)


def test_strings_you_made_are_trusted_and_others_are_not(tmp_path):
    text = jms.to_base64(models.mlp(), format="torchscript", example_inputs=torch.randn(2, 8))
    assert isinstance(jms.from_base64(text), torch.jit.ScriptModule)
    prefix, fmt, layout, sha, _, payload = text.split(":")
    unsigned = ":".join([prefix, fmt, layout, sha, payload])
    with pytest.raises(jms.UnsafeArtifactError, match="trusted=True"):
        jms.from_base64(unsigned)
    assert isinstance(jms.from_base64(unsigned, trusted=True), torch.jit.ScriptModule)
    made_up = ":".join([prefix, fmt, layout, sha, sha, payload])
    with pytest.raises(jms.UnsafeArtifactError):
        jms.from_base64(made_up)


def test_the_key_is_created_private_and_atomically(tmp_path, monkeypatch):
    key = tmp_path / "data" / "jupyter_modelsave_secret"
    monkeypatch.setenv(trust.SECRET_ENV, str(key))
    old = os.umask(0)  # the most permissive umask: the key is still 0600
    try:
        signature = trust.sign("a" * 64, "onnx")
    finally:
        os.umask(old)
    assert signature is not None and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_bytes()) == 64
    assert [p.name for p in key.parent.iterdir()] == [key.name]  # no temporary left
    assert trust.sign("a" * 64, "onnx") == signature  # the same key next time


def test_the_default_key_lives_in_the_jupyter_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(trust.SECRET_ENV)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))
    assert trust.secret_path() == tmp_path / "jupyter" / "jupyter_modelsave_secret"


def test_a_key_others_can_read_signs_nothing_and_proves_nothing(other_user, tmp_path):
    # Given an artifact signed while the key was private, then the key made readable by others
    # (they could forge signatures with it)
    staged = jms.stage(models.mlp(), torch.randn(2, 8), format="torchscript", parity=False)
    signed = staged.write(tmp_path / "before")
    other_user.chmod(0o644)
    # Then no signature made with it is believed
    with (
        pytest.warns(UserWarning, match="readable by other users"),
        pytest.raises(jms.UnsafeArtifactError),
    ):
        jms.load(signed)
    # And what is written now is unsigned
    with pytest.warns(UserWarning, match="readable by other users"):
        unsigned = staged.write(tmp_path / "after")
    assert _manifest(unsigned)["signature"] is None
    with pytest.raises(jms.UnsafeArtifactError):
        jms.load(unsigned)
