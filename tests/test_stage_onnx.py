"""stage(): ONNX export with exporter fallback, dynamic axes, names, metadata and parity probes."""

import json

import onnx
import pytest
import torch

import jupyter_modelsave as jms

from . import models


@pytest.fixture(scope="module")
def staged_mlp():
    torch.manual_seed(0)
    net = models.mlp()
    staged = jms.stage(
        net,
        torch.randn(3, 8),
        dynamic_axes={"input": {0: "batch"}},
        metadata={"labels": ["a", "b", "c", "d"], "task": "demo"},
    )
    yield net, staged
    staged.discard()


def _proto(staged):
    return onnx.load(str(staged.path))


def test_mlp_exports_with_dynamo_and_a_symbolic_batch(staged_mlp):
    _, staged = staged_mlp
    proto = _proto(staged)
    onnx.checker.check_model(proto)
    assert staged.exporter == "dynamo"
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["output"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert (dims[0].dim_param, dims[1].dim_value) == ("batch", 8)


def test_parity_probes_cover_random_inputs_and_another_batch_size(staged_mlp):
    _, staged = staged_mlp
    report = staged.report
    assert report.passed
    assert [p.name for p in report.probes] == [
        "example",
        "random normal",
        "random matched",
        "negated example",
        "shifted example",
        "scaled example",
        "batch=2",
    ]
    other = report.probes[-1].outputs[0]
    assert other.shape == [2, 4]
    assert report.outputs[0].max_abs < 1e-4
    assert (report.atol, report.rtol, report.tf32) == (1e-4, 1e-3, False)


def test_metadata_props_carry_producer_versions_inputs_and_user_metadata(staged_mlp):
    _, staged = staged_mlp
    props = {p.key: p.value for p in _proto(staged).metadata_props}
    assert props["producer"] == "jupyter_modelsave"
    assert props["producer_version"] == jms.__version__
    assert props["torch_version"] == torch.__version__
    (spec,) = json.loads(props["inputs"])
    assert spec == {
        "name": "input",
        "shape": [3, 8],
        "dtype": "float32",
        "device": "cpu",
        "dynamic_axes": {"0": "batch"},
    }
    assert json.loads(props["labels"]) == ["a", "b", "c", "d"]
    assert props["task"] == "demo"


def test_staged_artifact_has_size_and_sha256(staged_mlp):
    import hashlib

    _, staged = staged_mlp
    data = staged.path.read_bytes()
    assert staged.size_bytes == len(data)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()


def test_cnn_with_batchnorm_passes_and_keeps_training_mode_and_running_stats():
    cnn = models.SmallCNN().train()
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    staged = jms.stage(cnn, torch.randn(2, 3, 16, 16))
    assert staged.report.passed
    assert cnn.training and cnn.features[1].training
    after = cnn.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_two_inputs_are_named_after_forward_parameters():
    staged = jms.stage(models.TwoInputs(), (torch.randn(2, 4), torch.randn(2, 6)))
    assert [s.name for s in staged.input_specs] == ["left", "right"]
    assert [i.name for i in _proto(staged).graph.input] == ["left", "right"]
    assert staged.report.passed


def test_dict_output_names_are_the_dict_keys():
    staged = jms.stage(models.DictOutput(), torch.randn(2, 5))
    assert [o.name for o in _proto(staged).graph.output] == ["logits", "probs"]
    assert [o.name for o in staged.report.outputs] == ["logits", "probs"]
    assert staged.report.passed


def test_tuple_output_names_are_numbered():
    class Pair(torch.nn.Module):
        def forward(self, x):
            return x + 1, x * 2

    staged = jms.stage(Pair(), torch.randn(2, 2))
    assert [o.name for o in _proto(staged).graph.output] == ["output_0", "output_1"]


def test_custom_input_and_output_names_are_used():
    staged = jms.stage(models.mlp(), torch.randn(1, 8), input_names=["x"], output_names=["scores"],
                       dynamic_axes={"x": {0: "n"}})  # fmt: skip
    proto = _proto(staged)
    assert [i.name for i in proto.graph.input] == ["x"]
    assert [o.name for o in proto.graph.output] == ["scores"]
    assert staged.report.passed


def test_lstm_with_dynamic_batch_and_time_passes_on_other_sizes():
    staged = jms.stage(models.Recurrent(), torch.randn(2, 7, 6),
                       dynamic_axes={"seq": {0: "batch", 1: "time"}})  # fmt: skip
    names = [p.name for p in staged.report.probes]
    assert "batch=1" in names and "time=6" in names
    assert staged.report.passed, staged.report.diagnosis


def test_transformer_with_token_ids_and_dynamic_sequence():
    tokens = torch.randint(0, 50, (2, 7))
    staged = jms.stage(models.TinyTransformer().eval(), tokens,
                       dynamic_axes={"tokens": {0: "batch", 1: "seq"}})  # fmt: skip
    assert staged.report.passed, staged.report.diagnosis
    seq_probe = next(p for p in staged.report.probes if p.name == "seq=6")
    assert seq_probe.outputs[0].shape == [2, 6, 50]
    assert staged.report.outputs[0].top1_agreement == 1.0


def test_keyword_inputs_are_exported_by_name():
    model = models.KeywordModel()
    staged = jms.stage(model, {"x": torch.randn(2, 3), "scale": torch.rand(2, 2)})
    assert [i.name for i in _proto(staged).graph.input] == ["x", "scale"]
    assert staged.report.passed


def test_data_dependent_branch_is_flagged_after_fallback_to_torchscript():
    model = models.DataDependentBranch()
    staged = jms.stage(model, torch.full((2, 4), 5.0))
    assert staged.exporter == "torchscript"
    assert any(w.startswith("dynamo exporter failed") for w in staged.warnings)
    assert not staged.report.passed
    assert staged.report.probes[0].passed  # the example input agrees
    text = " ".join(staged.report.diagnosis)
    assert "data-dependent branch" in text
    assert "not rounding error" in text


def test_model_that_no_exporter_handles_raises_export_error_naming_both_exporters():
    with pytest.raises(jms.ExportError) as err:
        jms.stage(models.Untraceable(), torch.randn(3, 3))
    message = str(err.value)
    assert "dynamo exporter failed" in message and "torchscript exporter failed" in message


def test_exporter_torchscript_is_honoured():
    staged = jms.stage(models.mlp(), torch.randn(2, 8), exporter="torchscript",
                       dynamic_axes={"input": {0: "batch"}})  # fmt: skip
    assert staged.exporter == "torchscript"
    assert staged.report.passed


def test_opset_is_applied():
    staged = jms.stage(models.mlp(), torch.randn(2, 8), opset=17, exporter="torchscript")
    assert staged.opset == 17
    assert _proto(staged).opset_import[0].version == 17


def test_last_recorded_input_is_used_when_none_is_given():
    net = models.mlp()
    jms.watch(net)
    net(torch.randn(4, 8))
    staged = jms.stage(net)
    assert staged.input_specs[0].shape == (4, 8)
    assert "last recorded forward call" in staged.warnings[0]


def test_progress_callback_reports_steps_in_order():
    calls = []
    jms.stage(models.mlp(), torch.randn(2, 8), progress=lambda step, f: calls.append((step, f)))
    fractions = [f for _, f in calls]
    assert fractions == sorted(fractions)
    assert calls[0] == ("prepare", 0.0) and calls[-1] == ("done", 1.0)
    assert any(step.startswith("parity") for step, _ in calls)


def test_parity_can_be_skipped():
    staged = jms.stage(models.mlp(), torch.randn(2, 8), parity=False)
    assert staged.report is None


def test_external_data_gives_a_folder_with_model_and_data():
    wide = torch.nn.Sequential(torch.nn.Linear(64, 64))  # weights over onnx's 1 KiB inline limit
    staged = jms.stage(wide, torch.randn(2, 64), external_data=True)
    assert staged.path.is_dir()
    assert sorted(p.name for p in staged.path.iterdir()) == ["model.onnx", "model.onnx.data"]
    onnx.checker.check_model(str(staged.path / "model.onnx"))
    assert staged.report.passed


def test_device_option_exports_a_copy_and_leaves_the_live_model_alone():
    net = models.mlp()
    staged = jms.stage(net, torch.randn(2, 8), device="cpu")
    assert staged.report.reference_device == "cpu"
    assert next(net.parameters()).device.type == "cpu"


def test_html_report_is_a_table_with_each_probe():
    html = jms.stage(models.mlp(), torch.randn(2, 8)).report._repr_html_()
    assert html.count("<tr") == 1 + 6  # header + one row per probe (one output)
    assert "parity passed" in html


def test_verify_rechecks_parity_with_other_tolerances_without_exporting_again():
    torch.manual_seed(0)
    model = models.mlp()
    staged = jms.stage(model, torch.randn(2, 8))
    with torch.no_grad():
        model[2].bias.add_(2e-3)  # the live model moves a little away from the artifact
    assert not staged.verify().passed
    path_before = staged.path.stat().st_mtime_ns
    loose = staged.verify(atol=1e-2)
    assert loose.passed and staged.report is loose and loose.atol == 1e-2
    assert staged.tolerances == (1e-2, 1e-3)
    assert staged.path.stat().st_mtime_ns == path_before
    with pytest.raises(jms.InvalidOptionError, match="atol must be"):
        staged.verify(atol=-1)


class CountingMLP(torch.nn.Module):
    """Counts the forward calls that run the model for real (not a trace of it)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = models.mlp()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and type(x) is torch.Tensor:
            self.calls += 1
        return self.body(x)


def test_the_example_probe_reuses_the_outputs_stage_computed_and_verify_runs_the_model_again():
    # Given a model that counts its real forward calls
    model = CountingMLP().eval()
    # When it is staged (TorchScript: the trace's call does not count)
    staged = jms.stage(model, torch.randn(3, 8), format="torchscript", latency=False)
    # Then the live model ran once per probe: the example's outputs served names and parity
    assert model.calls == len(staged.report.probes)
    # and a later verify() runs the model as it is now, example included
    with torch.no_grad():
        model.body[0].weight.add_(1.0)
    assert not staged.verify().probes[0].passed
