"""The release check for Keras models: their own precision only, no latency (for now)."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")

import jupyter_modelsave as jms

from . import models


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"precision": "fp16"}, "Keras models take precision='fp32'"),
        ({"precision": "int8", "format": "onnx"}, "Keras models take precision='fp32'"),
        ({"calibration": True}, "Keras models take precision='fp32'"),
    ],
)
def test_a_keras_variant_is_refused_saying_what_it_takes(options, says):
    with pytest.raises(jms.InvalidOptionError, match=says):
        jms.stage(models.cnn(), models.array(2, 8, 8, 3), **options)


def test_a_keras_model_stages_as_its_own_precision_without_latency():
    staged = jms.stage(models.cnn(), models.array(2, 8, 8, 3), format="weights", precision="fp32")
    assert staged.precision == "fp32" and staged.latency is None and staged.variant is None
    assert jms.precisions("onnx", "keras") == ["fp32"]
