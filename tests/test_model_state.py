"""The live model is left exactly as it was, after success and after failure."""

import pytest
import torch

import jupyter_modelsave as jms

from . import models


def _state(model):
    return {
        "training": [m.training for m in model.modules()],
        "grads": [p.requires_grad for p in model.parameters()],
        "devices": [p.device for p in model.parameters()],
        "dtypes": [p.dtype for p in model.parameters()],
        "values": {k: v.clone() for k, v in model.state_dict().items()},
        "hooks": [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()],
    }


def _assert_same(before, after):
    for key in ("training", "grads", "devices", "dtypes", "hooks"):
        assert before[key] == after[key], key
    assert before["values"].keys() == after["values"].keys()
    assert all(torch.equal(before["values"][k], after["values"][k]) for k in before["values"])


def _prepared_cnn():
    cnn = models.SmallCNN().train()
    cnn.head.weight.requires_grad_(False)
    cnn.features.register_forward_hook(lambda m, i, o: None)
    return cnn


def test_state_is_unchanged_after_a_successful_stage():
    cnn = _prepared_cnn()
    before = _state(cnn)
    jms.stage(cnn, torch.randn(2, 3, 8, 8), exporter="torchscript").discard()
    jms.stage(cnn, torch.randn(2, 3, 8, 8)).discard()
    _assert_same(before, _state(cnn))


def test_state_is_unchanged_after_a_failed_export():
    model = models.DataDependentBranch().train()
    model.lin.register_forward_pre_hook(lambda m, a: None)
    before = _state(model)
    with pytest.raises(jms.ExportError):
        jms.stage(model, torch.full((1, 4), 5.0), exporter="dynamo")
    _assert_same(before, _state(model))


def test_state_is_unchanged_when_parity_raises_midway(monkeypatch):
    from jupyter_modelsave.core import verify

    cnn = _prepared_cnn()
    before = _state(cnn)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(verify, "make_probes", boom)
    with pytest.raises(KeyboardInterrupt):
        jms.stage(cnn, torch.randn(1, 3, 8, 8))
    _assert_same(before, _state(cnn))
