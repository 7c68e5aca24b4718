"""Every format round-trips the models built in tests/models.py; format options are checked."""

import json
import zipfile

import pytest
import torch
from safetensors import safe_open
from torch import nn

import jupyter_modelsave as jms
from jupyter_modelsave.core.formats.safetensors_format import parse_size

from . import models

WEIGHT_FORMATS = ["safetensors", "state_dict", "checkpoint"]


def _half(dtype):
    torch.manual_seed(1)
    return models.SmallCNN().to(dtype)


MODELS = {
    "mlp": models.mlp,
    "cnn_with_buffers": models.SmallCNN,
    "tied_lm_head": models.TiedLM,
    "bf16": lambda: _half(torch.bfloat16),
    "fp16": lambda: _half(torch.float16),
}


def _weights(fmt, loaded):
    return loaded["model_state"] if fmt == "checkpoint" else loaded


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("fmt", WEIGHT_FORMATS)
def test_weight_formats_round_trip_bitwise_without_example_inputs(tmp_path, fmt, model_name):
    # Given a model with trained-looking buffers and no example inputs
    model = MODELS[model_name]()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.num_batches_tracked += 7
    # When it is staged, written and loaded back
    staged = jms.stage(model, format=fmt, name="net")
    path = staged.write(tmp_path)
    loaded = _weights(fmt, jms.load(path))
    # Then the round trip parity passed, and every tensor is back, bitwise, with its dtype
    assert staged.report.passed and staged.report.kind == "weights"
    assert staged.output_specs == [] and staged.input_specs == []
    expected = model.state_dict()
    assert set(loaded) == set(expected)
    for key, tensor in expected.items():
        assert loaded[key].dtype == tensor.dtype, key
        assert torch.equal(loaded[key], tensor), key


def test_weights_parity_fails_when_the_file_drops_a_tensor(monkeypatch):
    # Given a state dict format whose file silently loses one tensor
    from jupyter_modelsave.core.formats.state_dict import StateDictFormat

    real = StateDictFormat.load
    monkeypatch.setattr(
        StateDictFormat,
        "load",
        lambda self, *a, **k: {k_: v for k_, v in real(self, *a, **k).items() if k_ != "2.bias"},
    )
    # When it is staged
    staged = jms.stage(models.mlp(), format="state_dict")
    # Then the round trip names the missing tensor
    assert not staged.report.passed
    assert "2.bias: not bitwise equal (missing from the artifact)." in staged.report.diagnosis


def test_tied_weights_are_saved_once_and_come_back_tied(tmp_path):
    # Given a language model whose head is tied to its embedding
    lm = models.TiedLM()
    path = jms.stage(lm, format="safetensors", name="lm").write(tmp_path)
    # Then the file holds the embedding once and records the alias in its header
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        assert "head.weight" not in names and "embed.weight" in names
        assert json.loads(f.metadata()["aliases"]) == {"head.weight": "embed.weight"}
    one_copy = lm.embed.weight.numel() * 4
    assert path.stat().st_size < 1.5 * one_copy + 4096
    # And the loaded state dict has both names on one tensor
    state = jms.load(path)
    assert state["head.weight"].data_ptr() == state["embed.weight"].data_ptr()
    # And load_into a fresh model keeps its head tied, with the saved values
    fresh = models.TiedLM()
    jms.load_into(fresh, path)
    assert fresh.head.weight is fresh.embed.weight
    assert torch.equal(fresh.head.weight, lm.embed.weight)


def test_safetensors_header_holds_string_metadata(tmp_path):
    # Given a model in bf16 and fp32 parts and user metadata
    net = models.mlp()
    net[2].to(torch.bfloat16)
    path = jms.stage(
        net, format="safetensors", metadata={"class_names": ["a", "b"], "note": "v1"}
    ).write(tmp_path / "m.safetensors")
    # When the header is read
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    # Then it says what the file is, the dtype of each tensor, and the user's metadata
    assert meta["format"] == "pt" and meta["producer"] == "jupyter_modelsave"
    assert meta["torch_version"] == torch.__version__
    assert json.loads(meta["dtypes"]) == {
        "0.weight": "float32",
        "0.bias": "float32",
        "2.weight": "bfloat16",
        "2.bias": "bfloat16",
    }
    assert json.loads(meta["metadata"]) == {"class_names": ["a", "b"], "note": "v1"}


class Views(nn.Module):
    """A transposed (non-contiguous) buffer and two buffers that are slices of one storage."""

    def __init__(self) -> None:
        super().__init__()
        base = torch.arange(12.0)
        self.register_buffer("transposed", torch.randn(3, 4).t())
        self.register_buffer("first", base[:6])
        self.register_buffer("second", base[6:])
        self.lin = nn.Linear(2, 2)


def test_non_contiguous_and_partly_shared_tensors_are_saved(tmp_path):
    # Given tensors safetensors refuses as they are
    model = Views()
    assert not model.transposed.is_contiguous()
    # When staged as safetensors
    staged = jms.stage(model, format="safetensors")
    # Then the round trip is exact and nothing was aliased
    assert staged.report.passed
    state = jms.load(staged.write(tmp_path))
    assert torch.equal(state["transposed"], model.transposed)
    assert torch.equal(state["second"], torch.arange(6.0, 12.0))


def test_sharded_safetensors_use_the_transformers_layout(tmp_path):
    # Given a CNN and a tiny shard size
    cnn = models.SmallCNN()
    staged = jms.stage(cnn, format="safetensors", max_shard_size=1000, name="cnn")
    # When written to a folder
    path = staged.write(tmp_path)
    # Then the artifact is a folder of numbered shards with an index naming every tensor's shard
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in path.glob("*.safetensors"))
    assert len(shards) >= 2
    assert shards == [
        f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)
    ]
    assert set(index["weight_map"]) == set(cnn.state_dict())
    assert set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in cnn.state_dict().values()
    )
    for shard in shards:  # a shard is over the limit only when it holds one big tensor
        with safe_open(str(path / shard), framework="pt") as f:
            names = list(f.keys())
        assert (path / shard).stat().st_size < 1000 + 1024 or len(names) == 1
    # And it loads back whole, checked against its manifest
    assert staged.report.passed
    state = jms.load(path)
    assert all(torch.equal(state[k], v) for k, v in cnn.state_dict().items())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5GB", 5 * 10**9),
        ("500MB", 500 * 10**6),
        ("2GiB", 2 * 2**30),
        ("1.5kb", 1500),
        (4096, 4096),
    ],
)
def test_shard_sizes_accept_ints_and_unit_strings(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["big", "5XB", 0, -1, "0MB", True, 2.5])
def test_bad_shard_sizes_are_refused(bad):
    with pytest.raises(jms.InvalidOptionError, match="max_shard_size must be"):
        jms.stage(models.mlp(), format="safetensors", max_shard_size=bad)


@pytest.mark.parametrize(
    ("fmt", "options", "hint"),
    [
        ("safetensors", {"method": "trace"}, "takes only max_shard_size"),
        ("state_dict", {"max_shard_size": "1MB"}, "takes no option"),
        ("checkpoint", {"optimizer": "adam"}, "must be a torch.optim.Optimizer"),
        ("checkpoint", {"epoch": -1}, "epoch must be a non-negative int"),
        ("checkpoint", {"step": 1.5}, "step must be a non-negative int"),
        ("checkpoint", {"config": [1, 2]}, "config must be a dict"),
        ("checkpoint", {"config": {"act": nn.ReLU()}}, "config['act'] is a ReLU"),
        ("checkpoint", {"config": {"a": {1.5: "x"}}}, "has a float key"),
        ("checkpoint", {"lr": 0.1}, "not lr"),
        ("torchscript", {"method": "compile"}, "method must be 'trace' or 'script'"),
        ("torch_export", {"strict": True}, "takes no option"),
    ],
)
def test_bad_format_options_are_refused(fmt, options, hint):
    with pytest.raises(jms.InvalidOptionError) as err:
        jms.stage(models.mlp(), torch.randn(2, 8), format=fmt, **options)
    assert hint in str(err.value)


def test_checkpoint_holds_training_state_that_restores(tmp_path):
    # Given a model after one optimiser step
    torch.manual_seed(0)
    net = models.mlp()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(4, 8)).sum().backward()
    opt.step()
    rng = torch.get_rng_state()
    # When it is saved as a checkpoint with its optimiser, epoch, step and config
    path = jms.stage(
        net, format="checkpoint", optimizer=opt, epoch=3, step=120,
        config={"lr": 1e-3, "layers": [8, 16, 4], "act": "relu"},
    ).write(tmp_path / "ckpt.pt")  # fmt: skip
    ckpt = jms.load(path)
    # Then it holds everything, and the optimiser and RNG state restore
    assert (ckpt["epoch"], ckpt["step"], ckpt["torch_version"]) == (3, 120, torch.__version__)
    assert ckpt["config"] == {"lr": 1e-3, "layers": [8, 16, 4], "act": "relu"}
    fresh = models.mlp()
    fresh.load_state_dict(ckpt["model_state"])
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    fresh_opt.load_state_dict(ckpt["optimizer"])
    assert torch.equal(fresh_opt.state[fresh_opt.param_groups[0]["params"][0]]["exp_avg"],
                       opt.state[net[0].weight]["exp_avg"])  # fmt: skip
    assert torch.equal(ckpt["rng_states"]["torch"], rng)
    torch.set_rng_state(ckpt["rng_states"]["torch"])
    first = torch.rand(3)
    torch.set_rng_state(rng)
    assert torch.equal(first, torch.rand(3))
    assert {"python", "numpy"} <= set(ckpt["rng_states"])


def test_checkpoint_without_options_has_empty_slots(tmp_path):
    ckpt = jms.load(jms.stage(models.mlp(), format="checkpoint").write(tmp_path / "c.pt"))
    assert (ckpt["optimizer"], ckpt["epoch"], ckpt["step"], ckpt["config"]) == (
        None,
        None,
        None,
        {},
    )


@pytest.fixture(scope="module")
def cnn_and_input():
    torch.manual_seed(0)
    return models.SmallCNN(), torch.randn(2, 3, 16, 16)


@pytest.mark.parametrize(("fmt", "loaded_type"), [("torchscript", torch.jit.ScriptModule),
                                                  ("torch_export", torch.export.ExportedProgram)])  # fmt: skip
def test_graph_formats_pass_output_parity_on_every_probe(tmp_path, cnn_and_input, fmt, loaded_type):
    cnn, x = cnn_and_input
    # When a CNN is staged with a dynamic batch axis
    staged = jms.stage(cnn, x, format=fmt, dynamic_axes={"image": {0: "batch"}})
    # Then parity ran the reloaded artifact on the example, random and resized probes
    assert staged.report.passed, staged.report.diagnosis
    assert staged.report.kind == "outputs"
    assert [p.name for p in staged.report.probes][-1].startswith("batch")
    # And the loaded object computes the model's outputs on a new batch size
    loaded = jms.load(staged.write(tmp_path))
    assert isinstance(loaded, loaded_type)
    run = loaded if fmt == "torchscript" else loaded.module()
    probe = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(run(probe), cnn.eval()(probe), rtol=1e-4, atol=1e-5)


def test_graph_formats_need_example_inputs():
    with pytest.raises(jms.MissingInputError, match="example_inputs="):
        jms.stage(models.mlp(), format="torchscript")


def test_scripting_keeps_control_flow_that_tracing_bakes_in():
    # Given a model with a Python `if` on tensor values, and an example taking one branch
    model, x = models.DataDependentBranch(), torch.randn(3, 4) + 5
    # When traced, the random probes take the other branch and parity fails
    traced = jms.stage(model, x, format="torchscript", method="trace")
    assert not traced.report.passed
    assert traced.exporter == "trace"
    # When scripted, both branches are kept and parity passes
    scripted = jms.stage(model, x, format="torchscript", method="script")
    assert scripted.report.passed and scripted.exporter == "script"


def test_torchscript_tracing_warnings_reach_the_report():
    staged = jms.stage(models.DataDependentBranch(), torch.randn(3, 4), format="torchscript")
    assert any("TracerWarning" in w for w in staged.warnings)


def test_torch_export_failure_is_an_export_error_with_a_hint():
    with pytest.raises(jms.ExportError, match=r"torch\.cond"):
        jms.stage(models.DataDependentBranch(), torch.randn(3, 4), format="torch_export")


def test_torch_export_of_a_capped_sequence_takes_the_range_torch_derives(tmp_path):
    # Given a model whose position embeddings cap the sequence at 12 (a plain Dim("seq") fails
    # with "Constraints violated (seq)!")
    model, tokens = models.Positional(), torch.randint(0, 20, (2, 6))
    # When it is exported with a dynamic batch and sequence
    axes = {"tokens": {0: "batch", 1: "seq"}}
    staged = jms.stage(model, tokens, format="torch_export", dynamic_axes=axes)
    # Then parity passes on other lengths, and the warnings keep torch's suggested fix
    assert staged.report.passed, staged.report.diagnosis
    assert {"batch=1", "seq=5"} <= {p.name for p in staged.report.probes}
    assert any("seq = Dim('seq', max=12)" in w for w in staged.warnings)
    program = jms.load(staged.write(tmp_path))
    longer = torch.randint(0, 20, (3, 11))
    with torch.no_grad():
        assert torch.equal(program.module()(longer), model(longer))


def test_torch_export_of_an_axis_the_model_fixes_says_so_without_a_control_flow_hint():
    with pytest.raises(jms.ExportError) as err:
        jms.stage(models.FixedBatch(), torch.randn(2, 3), format="torch_export",
                  dynamic_axes={"x": {0: "batch"}})  # fmt: skip
    message = str(err.value)
    assert "torch suggests: batch = 2" in message
    assert "leave batch out of dynamic_axes" in message and "torch.cond" not in message


def test_torch_export_keeps_keyword_inputs(tmp_path):
    model = models.KeywordModel()
    x, scale = torch.randn(2, 3), torch.randn(2, 2)
    staged = jms.stage(model, {"x": x, "scale": scale}, format="torch_export")
    assert staged.report.passed, staged.report.diagnosis
    program = jms.load(staged.write(tmp_path))
    with torch.no_grad():
        assert torch.equal(program.module()(x=x, scale=scale), model(x, scale=scale))


def test_formats_lists_every_format():
    expected = ["onnx", "safetensors", "state_dict", "checkpoint", "torchscript", "torch_export"]
    assert jms.formats() == expected


@pytest.mark.parametrize("fmt", ["torchscript", "torch_export"])
def test_graph_archives_embed_the_metadata(tmp_path, cnn_and_input, fmt):
    cnn, x = cnn_and_input
    staged = jms.stage(cnn, x, format=fmt, metadata={"class_names": ["cat", "dog"]})
    with zipfile.ZipFile(staged.write(tmp_path)) as archive:
        name = next(n for n in archive.namelist() if n.endswith("jupyter_modelsave.json"))
        note = json.loads(archive.read(name))
    assert note["metadata"] == {"class_names": ["cat", "dog"]}
    assert (note["inputs"], note["outputs"]) == (["image"], ["output"])


@pytest.mark.parametrize("fmt", ["torchscript", "torch_export"])
@pytest.mark.parametrize(
    ("build", "example"),
    [
        (models.TiedLM, lambda: torch.randint(0, 40, (2, 5))),
        (lambda: models.mlp().to(torch.bfloat16), lambda: torch.randn(2, 8, dtype=torch.bfloat16)),
        (lambda: models.mlp().to(torch.float16), lambda: torch.randn(2, 8, dtype=torch.float16)),
    ],
    ids=["tied_lm_head", "bf16", "fp16"],
)
def test_graph_formats_round_trip_tied_and_half_precision_models(tmp_path, fmt, build, example):
    model = build()
    staged = jms.stage(model, example(), format=fmt)
    assert staged.report.passed, staged.report.diagnosis
    fresh = build()
    jms.load_into(fresh, staged.write(tmp_path))
    assert all(
        torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values())
    )


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_onnx_external_data_holds_the_metadata_and_parity_maps_the_weights(monkeypatch, exporter):
    import onnx

    from jupyter_modelsave.core import _ort

    # Given a model staged with external data, parity spying on the ORT sessions it opens
    opened = []
    real_session = _ort.session

    def spy(path, prefer_cuda=True, map_weights=False, spin=True):
        opened.append(map_weights)
        return real_session(path, prefer_cuda, map_weights, spin)

    monkeypatch.setattr(_ort, "session", spy)
    wide = nn.Sequential(nn.Linear(600, 600), nn.ReLU(), nn.Linear(600, 4))  # 1.4 MB: aligned
    staged = jms.stage(wide, torch.randn(2, 600), external_data=True, exporter=exporter,
                       metadata={"note": "big"}, latency=False)  # fmt: skip
    # Then the graph file alone (weights not loaded) carries the metadata, the weights are in
    # the one data file, and parity ran ORT on the mapped file
    proto = onnx.load(str(staged.path / "model.onnx"), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["note"] == "big" and props["producer"] == "jupyter_modelsave"
    locations = {
        entry.value
        for init in proto.graph.initializer
        for entry in init.external_data
        if entry.key == "location"
    }
    assert locations == {"model.onnx.data"}
    assert staged.report.passed and opened == [True]
