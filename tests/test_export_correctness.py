"""Issue 15, generic half: the artifact asked for, or a clear no.

The opset asked for is the opset written (1); value-dependent branches are probed from both
sides and an exporter's own report of baked-in values fails parity (2); a dynamic axis the
exporter fixed is caught before parity, and no raw exception leaves ``stage`` (3); messages name
what to do (7); outputs below ``atol`` are judged relative to their own scale (8).
"""

import collections
import dataclasses
import types

import numpy as np
import onnx
import pytest
import torch

import jupyter_modelsave as jms
from jupyter_modelsave.core import inputs as core_inputs
from jupyter_modelsave.core.formats import onnx as onnx_format
from jupyter_modelsave.core.formats.base import ExportJob
from jupyter_modelsave.core.options import opset_range
from jupyter_modelsave.core.parity import ProbeResult, compare_output, diagnose

from . import models


def _default_opset(path) -> int:
    proto = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _input_dims(path) -> list[list]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input]


# --- 1. the opset asked for ---------------------------------------------------------------------

OPSETS = range(opset_range("auto")[0], opset_range("auto")[1] + 1)
SWEEP_MODELS = {
    "mlp": lambda: (models.mlp(), torch.randn(2, 8)),
    "cnn": lambda: (models.SmallCNN(), torch.randn(2, 3, 8, 8)),
    "transformer layer": lambda: (
        torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True),
        torch.randn(2, 5, 8),
    ),
}


@pytest.mark.parametrize("name", SWEEP_MODELS)
def test_every_accepted_opset_is_written_as_asked_or_refused_with_the_reason(name):
    torch.manual_seed(0)
    model, x = SWEEP_MODELS[name]()
    written, refused = [], []
    for opset in OPSETS:
        try:
            staged = jms.stage(model, x, opset=opset, parity=False)
        except jms.ExportError as err:
            message = str(err)
            # Then the refusal names the opset and what each exporter did
            assert f"at opset {opset}" in message and "dynamo exporter" in message, message
            refused.append(opset)
            continue
        # Then the file's default-domain opset is the one asked for, and staged.opset says so
        assert (_default_opset(staged.path), staged.opset) == (opset, opset), name
        written.append(opset)
        staged.discard()
    # The MLP and the CNN reach every opset; the transformer layer at least the dynamo ones
    assert set(range(18, OPSETS[-1] + 1)) <= set(written), (written, refused)
    if name != "transformer layer":
        assert written == list(OPSETS), refused


@pytest.mark.parametrize("opset", [11, 12])
def test_old_opsets_are_real_targets_with_passing_parity(opset):
    staged = jms.stage(models.SmallCNN(), torch.randn(2, 3, 8, 8), opset=opset,
                       dynamic_axes={"image": {0: "batch"}})  # fmt: skip
    assert staged.opset == _default_opset(staged.path) == opset
    assert staged.exporter == "torchscript"  # below 18, TorchScript builds the opset natively
    assert staged.report.passed, staged.report.diagnosis


@pytest.mark.parametrize("exporter", ["auto", "torchscript"])
def test_an_operator_newer_than_the_opset_is_refused_naming_the_exporters(exporter):
    # Given attention through SDPA (ONNX opset 14 and up), asked for at opset 11
    with pytest.raises(jms.ExportError) as err:
        jms.stage(models.Attention(), torch.randn(2, 5, 8), opset=11, exporter=exporter)
    message = str(err.value)
    # Then neither exporter's file is passed off as opset 11: each one's reason is given
    assert "at opset 11" in message
    assert "torchscript exporter failed" in message and "added in version 14" in message
    assert "version converter could not turn this one into opset 11" in message
    assert "exporter='torchscript'" not in message  # it was tried (finding 7)


def test_attention_at_an_opset_torchscript_reaches_is_written_at_that_opset():
    staged = jms.stage(models.Attention(), torch.randn(2, 5, 8), opset=14)
    assert (staged.opset, _default_opset(staged.path), staged.exporter) == (14, 14, "torchscript")
    assert staged.report.passed


def test_exporter_order_follows_the_opset():
    def order(exporter, opset):
        job = ExportJob(None, None, [], [], {}, opset, exporter, {}, None)
        return onnx_format.exporters_to_try(job)

    assert order("auto", None) == ["dynamo", "torchscript"]
    assert order("auto", 11) == ["torchscript", "dynamo"]
    assert order("auto", 21) == ["dynamo"]  # above TorchScript's last opset (20)
    assert order("torchscript", 18) == ["torchscript", "dynamo"]
    assert order("dynamo", 11) == ["dynamo"]


# --- 2. value-dependent branches ----------------------------------------------------------------


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["positive example", "negative example"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_baked_branch_fails_parity_whichever_side_the_example_takes(sign, fmt):
    torch.manual_seed(0)
    x = sign * (torch.rand(2, 4) + 0.1)
    staged = jms.stage(models.SignBranch(), x, format=fmt)
    report = staged.report
    assert not report.passed
    # Then a probe made from the example reaches the other side and disagrees
    negated = next(p for p in report.probes if p.name == "negated example")
    assert report.probes[0].passed and not negated.passed
    # And the exporter's own report (TracerWarning) names the line of the `if`
    assert any("models.py" in c and "boolean" in c for c in report.value_conversions)
    assert "baked in tensor values" in report.summary()
    with pytest.raises(jms.ParityError):
        staged.write("unused/")


def test_a_reported_conversion_fails_parity_even_when_every_probe_agrees():
    class Gate(torch.nn.Module):  # the branch only matters for inputs no probe reaches
        def forward(self, x):
            return x * 2 if x.abs().max() < 1e6 else x

    staged = jms.stage(Gate(), torch.randn(2, 3), format="torchscript")
    assert all(p.passed for p in staged.report.probes)
    assert not staged.report.passed and staged.report.value_conversions
    assert "allow_mismatch=True" in staged.report.diagnosis[0]


def test_torch_s_own_shape_checks_are_not_reported_as_baked_values():
    # Given torch modules whose tracing warns "Converting a tensor to a Python boolean" inside
    # torch itself (shape checks in nn.LSTM and multi_head_attention_forward)
    class SelfAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    cases = [
        (SelfAttention().eval(), torch.randn(2, 5, 8)),
        (models.Recurrent(), torch.randn(2, 5, 6)),
    ]
    for model, x in cases:
        staged = jms.stage(model, x, exporter="torchscript")
        assert staged.exporter == "torchscript"
        assert any("TracerWarning" in w for w in staged.warnings)
        # Then the report neither flags them nor fails
        assert staged.report.value_conversions == [] and staged.report.passed, (
            staged.report.diagnosis
        )


class ShapeChecked(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 2)

    def forward(self, x):
        if x.shape[1] != 8:  # TorchScript warns here too, though only a shape is read
            raise ValueError("expected 8 features")
        return self.lin(x)


class ReadsANumber(torch.nn.Module):
    def forward(self, x):
        return x.roll(int(x.argmax()), 1)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_shape_check_in_user_code_is_reported_but_does_not_fail_parity(fmt):
    options = {"exporter": "torchscript"} if fmt == "onnx" else {}
    staged = jms.stage(ShapeChecked(), torch.randn(2, 8), format=fmt, **options)
    assert staged.report.passed and staged.report.value_conversions == []
    assert any(
        "about shape checks" in w and "test_export_correctness.py" in w for w in staged.warnings
    )


def test_a_tensor_read_as_a_python_number_fails_parity():
    staged = jms.stage(ReadsANumber(), torch.randn(2, 5), format="torchscript")
    assert not staged.report.passed
    assert any("Python integer" in c for c in staged.report.value_conversions)


def test_derived_probes_keep_token_ids_valid_and_masks_as_they_are():
    ids = torch.tensor([[3, 7, 40, 12], [5, 3, 9, 40]])
    mask = torch.tensor([[True, True, False, True], [True, False, True, True]])
    example = core_inputs.ExampleInputs((ids, torch.randn(2, 4), mask), {}, ["ids", "x", "mask"])
    probes = core_inputs.make_probes(example, {})
    assert set(core_inputs.DERIVED_PROBES) <= set(probes)
    for name in core_inputs.DERIVED_PROBES:
        got_ids, _, got_mask = probes[name].tensors
        assert got_ids.dtype == ids.dtype and got_mask.dtype == torch.bool
        assert int(got_ids.min()) >= 3 and int(got_ids.max()) <= 40  # still valid ids
        assert torch.equal(got_mask, mask)
    assert not torch.equal(probes["negated example"].tensors[0], ids)  # the ids moved too
    assert torch.equal(probes["negated example"].tensors[1], -example.tensors[1])
    # a narrow integer dtype does not overflow while being mirrored or rotated
    small = torch.tensor([[-128, 0, 127]], dtype=torch.int8)
    for probe in core_inputs.derived_from_example(core_inputs.ExampleInputs((small,))).values():
        assert probe.tensors[0].dtype == torch.int8
        assert -128 <= int(probe.tensors[0].min()) <= int(probe.tensors[0].max()) <= 127


def test_embedding_and_mask_models_pass_on_the_derived_probes():
    tokens = torch.randint(0, 30, (2, 6))
    tagger = jms.stage(models.Tagger(), tokens)
    masked = jms.stage(models.MaskedMean(), (torch.randn(2, 4, 3), torch.rand(2, 4) > 0.3))
    for report in (tagger.report, masked.report):
        names = [p.name for p in report.probes]
        assert "negated example" in names and "shifted example" in names
        assert report.passed, report.diagnosis


# --- 3. a dynamic axis the exporter fixed; no raw exception --------------------------------------


@pytest.mark.parametrize("cell", [torch.nn.LSTM, torch.nn.GRU])
def test_a_recurrent_tagger_restages_with_a_dynamic_sequence_after_a_training_step(cell):
    torch.manual_seed(0)
    tagger, tokens = models.Tagger(cell), torch.randint(0, 30, (2, 20))
    optimizer = torch.optim.SGD(tagger.parameters(), lr=0.1)
    axes = {"tokens": {0: "batch", 1: "seq"}}
    for _ in range(2):
        staged = jms.stage(tagger, tokens, dynamic_axes=axes)
        # Then each artifact keeps both axes symbolic and passes on a shorter sequence
        assert _input_dims(staged.path) == [["batch", "seq"]]
        assert "seq=19" in [p.name for p in staged.report.probes]
        assert staged.report.passed, staged.report.diagnosis
        tagger(tokens).sum().backward()
        optimizer.step()


def test_an_axis_the_exporter_fixed_is_an_export_error_naming_it():
    # Given two inputs that share batch and sequence, with only one of them marked dynamic
    ids, mask = torch.randint(0, 30, (2, 16)), torch.ones(2, 16)
    with pytest.raises(jms.ExportError) as err:
        jms.stage(models.TokensAndMask(), (ids, mask), exporter="dynamo",
                  dynamic_axes={"input_ids": {0: "batch", 1: "seq"}})  # fmt: skip
    message = str(err.value)
    # Then the message names the fixed axes and the input to mark (not an ORT error on a probe)
    assert "it fixed the dynamic axis 'batch' (input_ids dim 0) at 2" in message
    assert "the dynamic axis 'seq' (input_ids dim 1) at 16" in message
    assert "'attention_mask': {0: 'batch', 1: 'seq'}" in message
    # And marking both inputs works
    both = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    staged = jms.stage(models.TokensAndMask(), (ids, mask), exporter="dynamo", dynamic_axes=both)
    assert staged.report.passed and _input_dims(staged.path) == [["batch", "seq"]] * 2


def test_the_artifact_failing_on_a_probe_is_an_export_error_naming_the_probe(monkeypatch):
    def runner(self, exported, job):
        def run(probe):
            if probe.tensors[0].shape[0] != 3:
                raise RuntimeError("Got invalid dimensions for input")
            return {"output": job.model(*probe.args).detach().numpy()}

        return run

    monkeypatch.setattr(onnx_format.OnnxFormat, "runner", runner)
    with pytest.raises(
        jms.ExportError, match=r"failed on the parity probe 'batch=2' \(input \(2, 8\)\)"
    ):
        jms.stage(models.mlp(), torch.randn(3, 8), dynamic_axes={"input": {0: "batch"}})


def test_a_runtime_that_cannot_open_the_artifact_is_an_export_error(monkeypatch):
    def runner(self, exported, job):
        raise RuntimeError("[ONNXRuntimeError] : 10 : INVALID_GRAPH")

    monkeypatch.setattr(onnx_format.OnnxFormat, "runner", runner)
    with pytest.raises(jms.ExportError, match=r"could not be opened for the parity check.*INVALID"):
        jms.stage(models.mlp(), torch.randn(3, 8))


def test_any_other_failure_inside_an_exporter_is_an_export_error(monkeypatch):
    def export(self, job):
        raise KeyError("a bug deep inside an exporter")

    monkeypatch.setattr(onnx_format.OnnxFormat, "export", export)
    with pytest.raises(jms.ExportError, match="The export of the onnx artifact failed: KeyError"):
        jms.stage(models.mlp(), torch.randn(3, 8))


# --- 7. messages ---------------------------------------------------------------------------------


def test_a_probe_the_live_model_rejects_is_named_with_the_inputs_to_mark():
    ids, mask = torch.randint(0, 30, (2, 16)), torch.ones(2, 16)
    with pytest.raises(jms.InvalidOptionError) as err:
        jms.stage(models.TokensAndMask(), (ids, mask),
                  dynamic_axes={"input_ids": {0: "batch", 1: "seq"}})  # fmt: skip
    message = str(err.value)
    assert "on the example inputs" not in message
    assert "failed on a parity probe (input_ids (2, 15), attention_mask (2, 16))" in message
    assert "'seq=15' resizes a dynamic axis" in message
    assert "attention_mask has unmarked dimensions" in message
    assert "'attention_mask': {0: 'batch', 1: 'seq'}" in message


def test_torch_s_graph_dump_and_log_lines_stay_out_of_the_notebook(capfd):
    with pytest.raises(jms.ExportError):
        jms.stage(models.Attention(), torch.randn(2, 5, 8), opset=11)
    jms.stage(models.SignBranch(), torch.rand(2, 4))  # dynamo's data-dependent guard logs
    out, err = capfd.readouterr()
    assert "Torch IR graph" not in out + err
    assert "symbolic_shapes" not in out + err
    assert out + err == ""


def test_no_export_error_suggests_the_exporter_that_just_failed():
    with pytest.raises(jms.ExportError) as auto:
        jms.stage(models.Untraceable(), torch.randn(3, 3))
    with pytest.raises(jms.ExportError) as dynamo_only:
        jms.stage(models.Untraceable(), torch.randn(3, 3), exporter="dynamo")
    assert "torchscript exporter failed" in str(auto.value)
    assert "exporter='torchscript'" not in str(auto.value)
    assert "exporter='auto', which also tries the TorchScript exporter" in str(dynamo_only.value)


class _Returns(torch.nn.Module):
    """A linear layer whose output goes through ``wrap`` (the class of output under test)."""

    def __init__(self, wrap) -> None:
        super().__init__()
        self.linear, self.wrap = torch.nn.Linear(4, 3), wrap

    def forward(self, x):
        return self.wrap(self.linear(x))


@dataclasses.dataclass
class _Pair:
    first: torch.Tensor
    second: torch.Tensor


class _Holder:
    def __init__(self, value) -> None:
        self.value = value


_Named = collections.namedtuple("_Named", "first second")

UNREADABLE_OUTPUTS = {
    "dataclass": lambda y: _Pair(y, y + 1),
    "plain object": _Holder,
    "SimpleNamespace": lambda y: types.SimpleNamespace(y=y),
}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "torch_export"])
@pytest.mark.parametrize("wrap", list(UNREADABLE_OUTPUTS))
def test_an_output_class_holding_tensors_jms_cannot_read_says_what_to_return(wrap, fmt):
    model = _Returns(UNREADABLE_OUTPUTS[wrap])
    with pytest.raises(jms.InvalidOptionError, match="in which jms finds no tensors") as err:
        jms.stage(model, torch.randn(2, 4), format=fmt)
    assert "Return one of those from forward() (for a dataclass, a dict of its fields)" in str(
        err.value
    )


@pytest.mark.parametrize("empty", [(), [], {}, None, set()], ids=repr)
def test_an_output_with_no_tensors_at_all_is_refused_as_such(empty):
    with pytest.raises(jms.InvalidOptionError, match=r"returned no tensors \(\w+\); nothing"):
        jms.stage(_Returns(lambda y: empty), torch.randn(2, 4))


def test_a_namedtuple_output_exports_but_torch_export_says_to_return_a_tuple_or_dict():
    model = _Returns(lambda y: _Named(y, y.relu()))
    for fmt in ("onnx", "torchscript"):
        assert jms.stage(model, torch.randn(2, 4), format=fmt).report.passed
    with pytest.raises(jms.ExportError, match="namedtuple") as err:
        jms.stage(model, torch.randn(2, 4), format="torch_export")
    assert "return a tuple or a dict from forward()" in str(err.value)
    assert "Check that forward() runs" not in str(err.value)


# --- 8. outputs below atol -----------------------------------------------------------------------

TINY = (np.random.default_rng(0).standard_normal((4, 10)) * 1e-9).astype(np.float32)


@pytest.mark.parametrize(
    ("artifact", "passes"),
    [
        (TINY * (1 + 1e-6), True),  # float rounding
        (np.zeros_like(TINY), False),  # a graph that outputs nothing
        (TINY * 2, False),  # right direction, wrong scale
        (np.random.default_rng(1).standard_normal((4, 10)).astype(np.float32) * 1e-9, False),
    ],
    ids=["rounding", "zeros", "doubled", "unrelated"],
)
def test_outputs_below_atol_are_judged_relative_to_their_scale(artifact, passes):
    diff = compare_output("logits", TINY, artifact, 1e-4, 1e-3)
    assert diff.passed is passes
    assert diff.peak == pytest.approx(float(np.abs(TINY).max()))
    assert diff.scaled_atol == pytest.approx(1e-3 * diff.peak)
    (note,) = diagnose([ProbeResult("example", passes, [diff])], 1e-4, 1e-3)
    assert "below atol=0.0001" in note and ("does NOT agree" in note) is not passes


def test_outputs_at_ordinary_scale_keep_the_atol_rule():
    ref = np.linspace(-1, 1, 40, dtype=np.float32)
    diff = compare_output("y", ref, ref + 5e-5, 1e-4, 1e-3)
    assert diff.passed and diff.scaled_atol is None
    assert diagnose([ProbeResult("example", True, [diff])], 1e-4, 1e-3) == []


def test_a_staged_model_with_tiny_outputs_is_checked_at_its_own_scale():
    torch.manual_seed(0)
    net = models.mlp()
    with torch.no_grad():
        net[2].weight.mul_(1e-9)
        net[2].bias.mul_(1e-9)
    staged = jms.stage(net, torch.randn(3, 8))
    # Then the right artifact passes, and the report says how it was judged
    assert staged.report.passed, staged.report.diagnosis
    assert any("its values are tiny" in n for n in staged.report.diagnosis)
    # When the live model changes (the artifact is now wrong by a factor of 2, ~1e-9 absolute)
    with torch.no_grad():
        net[2].weight.mul_(2)
        net[2].bias.mul_(2)
    report = staged.verify()
    assert report.outputs[0].max_abs < 1e-4  # below atol: the old rule passed it
    assert not report.passed
    assert any("does NOT agree" in n for n in report.diagnosis)
