"""Loading: integrity, no unpickling without consent, map_location, load_into, base64, list_artifacts."""

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch

import jupyter_modelsave as jms
from jupyter_modelsave.core import hashing

from . import models

NO_CUDA = not torch.cuda.is_available()
FORMATS = ["safetensors", "state_dict", "checkpoint", "torchscript", "torch_export"]


class Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _bomb(path: Path, marker: Path) -> Path:
    torch.save({"weight": torch.ones(2), "extra": Payload(marker)}, path)
    return path


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One written artifact per format, all of the same CNN."""
    torch.manual_seed(0)
    cnn, x = models.SmallCNN(), torch.randn(2, 3, 16, 16)
    folder = tmp_path_factory.mktemp("written")
    paths = {fmt: jms.stage(cnn, x, format=fmt, name="cnn").write(folder) for fmt in FORMATS}
    return cnn, paths


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_changed_byte_is_an_integrity_error(tmp_path, written, fmt):
    # Given a copy of a written artifact and its manifest, with one byte flipped
    _, paths = written
    copy = tmp_path / paths[fmt].name
    data = bytearray(paths[fmt].read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    Path(f"{copy}.json").write_text(Path(f"{paths[fmt]}.json").read_text())
    # When it is loaded, then the sha256 check refuses it before any parsing
    with pytest.raises(jms.IntegrityError, match="does not match its manifest"):
        jms.load(copy)


def test_a_changed_shard_is_an_integrity_error(tmp_path):
    path = jms.stage(models.SmallCNN(), format="safetensors", max_shard_size=800).write(tmp_path)
    shard = sorted(path.glob("model-*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(jms.IntegrityError):
        jms.load(path)


@pytest.mark.parametrize("fmt", ["state_dict", "checkpoint"])
def test_a_pickle_bomb_is_refused_and_never_runs(tmp_path, fmt):
    # Given a .pt whose unpickling would create a marker file, with or without a manifest
    marker = tmp_path / "pwned"
    bomb = _bomb(tmp_path / "model.pt", marker)
    manifest = {"producer": "jupyter_modelsave", "format": fmt, "sha256": hashing.sha256_of(bomb)}
    Path(f"{bomb}.json").write_text(json.dumps(manifest))
    plain = _bomb(tmp_path / "plain.pt", marker)
    for path in (bomb, plain):
        # When it is loaded without trust
        with pytest.raises(jms.UnsafeArtifactError) as err:
            jms.load(path)
        # Then the error names what it asks for and the flag, and the payload never ran
        assert "trusted=True" in str(err.value) and "pathlib" in str(err.value)
        assert not marker.exists()
    with pytest.raises(jms.UnsafeArtifactError):
        jms.load_into(models.mlp(), plain)
    assert not marker.exists()


def test_trusted_true_unpickles_fully(tmp_path):
    marker = tmp_path / "ran"
    loaded = jms.load(_bomb(tmp_path / "model.pt", marker), trusted=True)
    assert marker.exists() and torch.equal(loaded["weight"], torch.ones(2))


def _rewritten(src: Path, dest: Path, replace: dict[str, bytes]) -> Path:
    """A copy of the zip ``src`` with some members' bytes replaced (names without the root folder)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            member = info.filename.split("/", 1)[-1]
            zout.writestr(info, replace.get(member, zin.read(info.filename)))
    return dest


def test_a_pt2_with_a_pickled_payload_is_refused_and_never_runs(tmp_path, written):
    # Given a torch.export archive whose first weight is switched to a pickled bomb
    _, paths = written
    marker = tmp_path / "pwned"
    with zipfile.ZipFile(paths["torch_export"]) as z:
        name = next(n for n in z.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(z.read(name))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    bomb = io.BytesIO()
    torch.save(Payload(marker), bomb)
    evil = _rewritten(paths["torch_export"], tmp_path / "evil.pt2", {
        "data/weights/model_weights_config.json": json.dumps(config).encode(),
        f"data/weights/{first['path_name']}": bomb.getvalue(),
    })  # fmt: skip
    # When it is loaded, then it is refused and the payload never ran
    with pytest.raises(jms.UnsafeArtifactError, match=r"a torch\.export program"):
        jms.load(evil)
    assert not marker.exists()


def test_a_cuda_saved_file_loads_on_the_cpu(tmp_path, monkeypatch):
    # Given files whose tensors are recorded as living on cuda:0 (as torch.save writes them on a GPU)
    torch.manual_seed(0)
    net = models.mlp()
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    state = tmp_path / "state.pt"
    torch.save(net.state_dict(), state)
    ckpt = jms.stage(net, format="checkpoint").write(tmp_path / "ckpt.pt")
    monkeypatch.undo()
    if NO_CUDA:  # the simulation is real: plain torch.load cannot place them here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(state, weights_only=True)
    # When they are loaded with the default map_location, then every tensor is on the CPU, intact
    for loaded in (jms.load(state), jms.load(ckpt)["model_state"]):
        assert all(t.device.type == "cpu" for t in loaded.values())
        assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())
    fresh = models.mlp()
    jms.load_into(fresh, state)
    assert torch.equal(fresh[0].weight, net[0].weight)


@pytest.mark.parametrize("where", ["cpu", torch.device("cpu")])
@pytest.mark.parametrize("fmt", FORMATS)
def test_map_location_is_accepted_by_every_format(written, fmt, where):
    cnn, paths = written
    loaded = jms.load(paths[fmt], map_location=where)
    state = {"checkpoint": lambda x: x["model_state"], "torchscript": lambda x: x.state_dict(),
             "torch_export": lambda x: x.state_dict}.get(fmt, lambda x: x)(loaded)  # fmt: skip
    assert all(t.device.type == "cpu" for t in state.values())
    assert torch.equal(state["head.weight"], cnn.head.weight)


@pytest.mark.parametrize(
    ("where", "hint"),
    [("gpu0", "is not a device"), (42.0, "is not a device"),
     *([("cuda", "has 0 CUDA device"), ("cuda:1", "map_location='cpu'")] if NO_CUDA else [])],
)  # fmt: skip
def test_bad_map_location_is_refused_with_a_hint(written, where, hint):
    with pytest.raises(jms.InvalidOptionError) as err:
        jms.load(written[1]["state_dict"], map_location=where)
    assert hint in str(err.value)


def test_a_pt_file_without_manifest_is_recognised(tmp_path, written):
    cnn, paths = written
    script, state = tmp_path / "script.pt", tmp_path / "state.pt"
    script.write_bytes(paths["torchscript"].read_bytes())
    state.write_bytes(paths["state_dict"].read_bytes())
    # without its manifest the copy carries no signature: a program loads only when trusted
    assert isinstance(jms.load(script, trusted=True), torch.jit.ScriptModule)
    assert set(jms.load(state)) == set(cnn.state_dict())


def test_a_path_under_home_is_loaded_as_written(tmp_path, monkeypatch):
    # Given an artifact written to "~/" (write expands it)
    monkeypatch.setenv("HOME", str(tmp_path))
    path = jms.stage(models.mlp(), format="state_dict").write("~/")
    # When it is loaded by the same "~/" path, then it loads
    assert set(jms.load(f"~/{path.name}")) == set(models.mlp().state_dict())
    with pytest.raises(jms.InvalidOptionError, match=f"No artifact at .*{tmp_path}/missing.pt"):
        jms.load("~/missing.pt")


@pytest.mark.parametrize("fmt", FORMATS)
def test_loading_a_manifest_names_the_artifact_to_pass(written, fmt):
    _, paths = written
    with pytest.raises(jms.InvalidOptionError, match="is the manifest of") as err:
        jms.load(f"{paths[fmt]}.json")
    assert str(err.value).endswith(f"pass the artifact's path, {paths[fmt]}.")


@pytest.mark.parametrize("name", [".json", "..json", "...json", "orphan.onnx.json", "x.json"])
def test_a_json_file_that_is_no_artifact_s_manifest_is_an_unknown_format(tmp_path, name):
    # Given a .json file with no artifact beside it (a bare ".json" included)
    (tmp_path / name).write_text("{}")
    # When it is loaded, then the format is unknown (a typed error, not a ValueError)
    with pytest.raises(jms.InvalidOptionError, match="Cannot tell the format"):
        jms.load(tmp_path / name)


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_into_restores_the_weights(written, fmt):
    cnn, paths = written
    fresh = models.SmallCNN()
    result = jms.load_into(fresh, paths[fmt])
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    assert all(
        torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), cnn.state_dict().values())
    )


def test_load_into_reports_missing_and_unexpected_keys_and_changes_nothing(written):
    # Given a model with other layer names than the artifact
    other = torch.nn.Module()
    other.features, other.classifier = models.SmallCNN().features, torch.nn.Linear(8, 10)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    # When strict loading is asked
    with pytest.raises(jms.StateDictMismatchError) as err:
        jms.load_into(other, written[1]["safetensors"])
    # Then the error lists both kinds of keys and says how to relax it, and nothing was copied
    message = str(err.value)
    assert "2 missing: classifier.weight, classifier.bias" in message
    assert "2 unexpected: head.bias, head.weight" in message and "strict=False" in message
    assert err.value.missing == ["classifier.weight", "classifier.bias"]
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_into_skips_the_non_persistent_buffers_an_archive_stores(tmp_path, fmt):
    # Given a model with a non-persistent buffer (TorchScript archives store it anyway)
    model, tokens = models.Positional(), torch.randint(0, 20, (2, 6))
    path = jms.export(model, tmp_path, tokens, format=fmt)
    fresh = models.Positional()
    # When its artifact is loaded strictly into a fresh model
    result = jms.load_into(fresh, path)
    # Then no key is unexpected and the weights are the artifact's
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    assert torch.equal(fresh.positions.weight, model.positions.weight)


def test_a_persistent_extra_key_is_still_unexpected(tmp_path):
    # Given an artifact of Positional and a model without its positions layer
    path = jms.export(
        models.Positional(), tmp_path, torch.randint(0, 20, (2, 6)), format="torchscript"
    )
    other = torch.nn.Module()
    other.embed = torch.nn.Embedding(20, 8)
    other.register_buffer("position_ids", torch.arange(12), persistent=False)
    # Then strict loading still names the one real extra key
    with pytest.raises(jms.StateDictMismatchError) as err:
        jms.load_into(other, path)
    assert err.value.unexpected == ["positions.weight"]


def test_load_into_non_strict_loads_what_matches(tmp_path):
    net = models.mlp()
    path = jms.stage(net, format="state_dict").write(tmp_path / "m.pt")
    bigger = torch.nn.Sequential(*models.mlp(), torch.nn.Linear(4, 2))
    result = jms.load_into(bigger, path, strict=False)
    assert result.missing_keys == ["3.weight", "3.bias"]
    assert torch.equal(bigger[2].weight, net[2].weight)


def test_load_into_refuses_other_shapes_even_when_not_strict(tmp_path):
    path = jms.stage(models.mlp(), format="safetensors").write(tmp_path / "m.safetensors")
    wider = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    with pytest.raises(
        jms.StateDictMismatchError, match=r"0\.weight: model \[32, 8\], artifact \[16, 8\]"
    ):
        jms.load_into(wider, path, strict=False)


def test_load_into_an_onnx_artifact_says_which_formats_hold_weights(tmp_path):
    path = jms.export(models.mlp(), tmp_path / "m.onnx", torch.randn(2, 8))
    with pytest.raises(jms.InvalidOptionError, match="format='safetensors'"):
        jms.load_into(models.mlp(), path)


@pytest.mark.parametrize(("fmt", "options"), [("safetensors", {}), ("state_dict", {}),
                                              ("safetensors", {"max_shard_size": 800})])  # fmt: skip
def test_base64_round_trip_of_weights(fmt, options):
    cnn = models.SmallCNN()
    text = jms.to_base64(cnn, format=fmt, **options)
    layout = "zip" if options else "file"
    assert text.startswith(f"jms1:{fmt}:{layout}:")
    state = jms.from_base64(text)
    assert all(torch.equal(state[k], v) for k, v in cnn.state_dict().items())


def test_base64_round_trip_of_onnx_gives_a_session():
    net, x = models.mlp(), torch.randn(2, 8)
    session = jms.from_base64(jms.to_base64(net, format="onnx", example_inputs=x))
    (out,) = session.run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), net(x).detach(), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def encoded():
    return jms.to_base64(models.mlp(), format="state_dict")


@pytest.mark.parametrize(
    ("damage", "hint"),
    [
        (lambda s: s[:-12] + ("A" if s[-12] != "A" else "B") + s[-11:], "changed or truncated"),
        (lambda s: s[: len(s) // 2], "base64 payload is damaged"),
        (lambda s: s[:-8], "changed or truncated"),
        (lambda s: s.replace("jms1:", "jms2:"), "not a jupyter_modelsave string"),
        (lambda s: s[:-100] + "!" + s[-99:], "base64 payload is damaged"),
    ],
    ids=["changed", "cut_mid_quad", "truncated", "wrong_prefix", "bad_character"],
)
def test_a_damaged_base64_string_is_an_integrity_error(encoded, damage, hint):
    with pytest.raises(jms.IntegrityError) as err:
        jms.from_base64(damage(encoded))
    assert hint in str(err.value)


def test_base64_of_a_pickle_bomb_is_refused(tmp_path):
    from jupyter_modelsave.core.transfer import encode

    marker = tmp_path / "pwned"
    text = encode(_bomb(tmp_path / "b.pt", marker), "state_dict")
    with pytest.raises(jms.UnsafeArtifactError):
        jms.from_base64(text)
    assert not marker.exists()


def test_list_artifacts_newest_first(tmp_path):
    # Given three versions of one model and another model, written one after the other
    net = models.mlp()
    staged = jms.stage(net, format="safetensors", name="net")
    first, second = staged.write(tmp_path), staged.write(tmp_path)
    other = jms.stage(models.SmallCNN(), format="state_dict", name="cnn").write(tmp_path)
    # And the oldest one's manifest says it was created later than the others
    manifest = Path(f"{first}.json")
    data = json.loads(manifest.read_text())
    data["created"] = "2999-01-01T00:00:00+00:00"
    manifest.write_text(json.dumps(data))
    # And files that are not jupyter_modelsave artifacts, and a manifest whose artifact is gone
    (tmp_path / "notes.json").write_text("{}")
    (tmp_path / "gone.pt.json").write_text(json.dumps({"producer": "jupyter_modelsave"}))
    # When the folder is listed
    listed = jms.list_artifacts(tmp_path)
    # Then the artifacts come newest first, with what their manifests say
    assert [a.path for a in listed[:1]] == [first]
    assert {a.path for a in listed} == {first, second, other}
    assert [a.version for a in listed if a.name == "net"] == ["1.0.0", "1.0.1"]
    newest = listed[0]
    assert (newest.format, newest.sha256, newest.parity_passed) == (
        "safetensors",
        staged.sha256,
        True,
    )
    assert newest.size_bytes == first.stat().st_size


def test_list_artifacts_orders_same_second_writes_by_version(tmp_path):
    staged = jms.stage(models.mlp(), format="state_dict", name="net")
    paths = [staged.write(tmp_path) for _ in range(3)]
    for p in paths:  # all in one second
        manifest = Path(f"{p}.json")
        data = {**json.loads(manifest.read_text()), "created": "2026-01-01T00:00:00+00:00"}
        manifest.write_text(json.dumps(data))
    assert [a.version for a in jms.list_artifacts(tmp_path)] == ["1.0.2", "1.0.1", "1.0.0"]


def test_list_artifacts_of_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(jms.InvalidOptionError, match="is not a folder"):
        jms.list_artifacts(tmp_path / "nope")
