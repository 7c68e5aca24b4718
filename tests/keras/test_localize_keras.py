"""Keras models are not localized: said plainly on request, and never in the way of staging."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

import jupyter_modelsave as jms

from . import models


def test_localize_on_a_keras_export_says_why_it_is_not_available():
    staged = jms.stage(models.cnn(), models.array(2, 8, 8, 3))
    assert staged.report.passed and staged.report.localization is None
    with pytest.raises(
        jms.InvalidOptionError, match="Keras and TensorFlow models are not localized"
    ):
        staged.localize()
    # And a failing check (tolerances nothing meets) is reported as before, without localization
    report = staged.verify(atol=0.0, rtol=0.0)
    assert not report.passed
    assert report.localization is None and report.first_divergence is None
    staged.discard()
