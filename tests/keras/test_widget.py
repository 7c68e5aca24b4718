"""The widget on a namespace with a Keras model beside a PyTorch one: formats follow the model."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

import torch

import jupyter_modelsave as jms
from jupyter_modelsave.widgets import ModelSaveWidget

from .. import models as torch_models
from . import models


@pytest.fixture
def namespace():
    two, example = models.two_inputs()
    return {"net": torch_models.mlp(), "cnn": models.cnn(), "two": two, "pair": example}


def test_format_and_opset_choices_follow_the_picked_model(namespace):
    widget = ModelSaveWidget("cnn", namespace=namespace)
    assert widget.format_picker.options == tuple(jms.formats("keras"))
    assert [(t, d) for t, d, _, _ in widget.axes] == [("image", d) for d in range(4)]
    keras_opsets = [v for _, v in widget.opset_picker.options if v is not None]
    widget.pick("net")
    assert widget.format_picker.options == tuple(jms.formats("torch"))
    assert widget.format_picker.value == "onnx"
    assert [v for _, v in widget.opset_picker.options if v is not None] != keras_opsets


def test_a_keras_model_stages_and_writes_from_the_widget(namespace, tmp_path):
    widget = ModelSaveWidget("two", namespace=namespace, dest=f"{tmp_path}/")
    widget.input_expr.value = "pair"
    assert [(t, d) for t, d, _, _ in widget.axes][:2] == [("input_0", 0), ("input_0", 1)]
    widget.mark_dynamic("input_0", 0, "batch")
    widget.mark_dynamic("input_1", 0, "batch")
    widget.format_picker.value = "savedmodel"
    staged = widget.stage()
    assert widget.state == "staged", widget.error
    assert staged.report.passed and [p.name for p in staged.report.probes][-1] == "batch=2"
    path = widget.write()
    assert widget.state == "written" and path.name.endswith(".savedmodel")
    assert "format='savedmodel'" in widget.code_text()


def test_a_torch_model_is_unaffected(namespace):
    widget = ModelSaveWidget("net", namespace=namespace)
    namespace["net"](torch.randn(2, 8))
    widget.refresh()
    assert widget.format_picker.options == tuple(jms.formats())


def test_the_kernel_describes_keras_onnx_with_tf2onnx_opsets_not_torchs(namespace, tmp_path):
    # The sidebar used to check a Keras ONNX opset against PyTorch's range: each framework's
    # ONNX format now carries its own range, read from one place (Adapter.opsets)
    import onnx
    from tf2onnx.constants import OPSET_TO_IR_VERSION

    from jupyter_modelsave import kernel as jk
    from jupyter_modelsave.core.options import opset_range

    side = jk.ModelSaveKernel(namespace, tmp_path / "staging", tmp_path)
    frameworks = side.options({})["frameworks"]
    keras_onnx = frameworks["keras"]["formats"]["onnx"]
    tf2onnx_high = min(max(OPSET_TO_IR_VERSION), onnx.defs.onnx_opset_version())
    assert keras_onnx["opsets"] == {"auto": [min(OPSET_TO_IR_VERSION), tf2onnx_high]}
    assert keras_onnx["exporters"] == []  # no exporter choice for Keras
    assert frameworks["torch"]["formats"]["onnx"]["opsets"]["auto"] == list(opset_range("auto"))
    assert frameworks["keras"]["formats"]["weights"]["opsets"] == {}
    # and the widget offers the same range for the Keras model
    widget = ModelSaveWidget("cnn", namespace=namespace)
    offered = [v for _, v in widget.opset_picker.options if v is not None]
    assert (min(offered), max(offered)) == (min(OPSET_TO_IR_VERSION), tf2onnx_high)
