"""Every bad input ends in a typed ModelSaveError that says what to do."""

import pytest
import torch

import jupyter_modelsave as jms

from . import models


@pytest.fixture(scope="module")
def net():
    return models.mlp()


X = torch.randn(2, 8)


@pytest.mark.parametrize(
    ("kwargs", "error", "hint"),
    [
        ({"format": "pickle"}, jms.InvalidOptionError, "choose one of: onnx"),
        ({"opset": 99}, jms.InvalidOptionError, "support opsets 7 to"),
        ({"opset": -1}, jms.InvalidOptionError, "Leave opset=None"),
        ({"opset": 22, "exporter": "torchscript"}, jms.InvalidOptionError, "torchscript exporter"),
        ({"exporter": "magic"}, jms.InvalidOptionError, "auto, dynamo, torchscript"),
        ({"dynamic_axes": {"input": {0: "batch size"}}}, jms.InvalidOptionError, "identifier"),
        ({"dynamic_axes": {"images": {0: "batch"}}}, jms.InvalidOptionError, "known names: input"),
        ({"dynamic_axes": {"input": {5: "batch"}}}, jms.InvalidOptionError, "out of range"),
        ({"dynamic_axes": ["input"]}, jms.InvalidOptionError, "must be a dict"),
        ({"atol": -1}, jms.InvalidOptionError, "atol must be a finite number"),
        ({"rtol": float("nan")}, jms.InvalidOptionError, "rtol must be a finite"),
        ({"atol": "small"}, jms.InvalidOptionError, "atol must be a number"),
        ({"input_names": ["a", "b"]}, jms.InvalidOptionError, "has 2 names but the model has 1"),
        ({"output_names": ["bad name!"]}, jms.InvalidOptionError, "not a usable tensor name"),
        ({"metadata": {"producer": "me"}}, jms.InvalidOptionError, "reserved"),
        ({"metadata": {"framework": "me"}}, jms.InvalidOptionError, "reserved"),
        ({"metadata": {"torch_version": "1"}}, jms.InvalidOptionError, "reserved"),
        ({"metadata": {"f": object()}}, jms.InvalidOptionError, "JSON-serialisable"),
        ({"name": "../escape"}, jms.InvalidOptionError, "cannot be used in a file name"),
        ({"device": "gpu9"}, jms.InvalidOptionError, "not a torch device"),
        ({"device": b"\x80"}, jms.InvalidOptionError, "not a torch device"),
    ],
)
def test_bad_options_are_refused_with_a_hint(net, kwargs, error, hint):
    with pytest.raises(error, match=None) as err:
        jms.stage(net, X, **kwargs)
    assert hint in str(err.value)
    assert isinstance(err.value, jms.ModelSaveError)


def test_non_module_is_refused():
    with pytest.raises(jms.NotAModelError, match="find_models"):
        jms.stage({"weights": 1}, X)


def test_missing_example_inputs_explain_how_to_pass_them():
    with pytest.raises(jms.MissingInputError, match="example_inputs="):
        jms.stage(models.mlp())


@pytest.mark.parametrize("bad", [[1, 2], "text", ()])
def test_non_tensor_example_inputs_are_refused(net, bad):
    with pytest.raises(jms.InvalidOptionError):
        jms.stage(net, bad)


def test_wrong_shape_example_input_reports_forward_failure(net):
    with pytest.raises(jms.InvalidOptionError, match=r"forward\(\) failed on the example inputs"):
        jms.stage(net, torch.randn(2, 5))


def test_export_raises_parity_error_unless_mismatch_is_allowed(tmp_path):
    model = models.DataDependentBranch()
    x = torch.full((2, 4), 5.0)
    with pytest.raises(jms.ParityError) as err:
        jms.export(model, tmp_path / "m.onnx", x)
    assert err.value.report is not None and not err.value.report.passed
    assert list(tmp_path.iterdir()) == []
    path = jms.export(model, tmp_path / "m.onnx", x, allow_mismatch=True)
    assert path.exists()


def test_unknown_format_option_is_refused(net):
    with pytest.raises(jms.InvalidOptionError, match="takes no option"):
        jms.stage(net, X, max_shard_size="1GB")
