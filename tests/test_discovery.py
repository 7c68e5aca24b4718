"""find_models lists the top-level models of a namespace and remembers their last inputs."""

import sys

import torch

import jupyter_modelsave as jms

from . import models


def test_lists_modules_and_skips_underscore_names_submodules_and_other_objects():
    cnn = models.SmallCNN()
    namespace = {"cnn": cnn, "head": cnn.head, "_hidden": models.mlp(), "x": torch.zeros(1), "n": 3}
    found = jms.find_models(namespace)
    assert [m.name for m in found] == ["cnn"]


def test_an_object_bound_twice_is_listed_once_under_its_first_name():
    net = models.mlp()
    assert [m.name for m in jms.find_models({"net": net, "alias": net})] == ["net"]


def test_model_info_describes_size_device_dtype_and_mode():
    net = models.mlp().double().eval()
    (info,) = jms.find_models({"net": net})
    assert info.class_name == "Sequential"
    assert info.num_params == 8 * 16 + 16 + 16 * 4 + 4
    assert info.size_bytes == info.num_params * 8
    assert (info.device, info.dtype, info.training) == ("cpu", "float64", False)
    assert info.to_dict()["name"] == "net"


def test_buffers_count_in_size_but_not_in_parameters():
    cnn = models.SmallCNN()
    (info,) = jms.find_models({"cnn": cnn})
    params = sum(p.numel() for p in cnn.parameters())
    buffer_bytes = sum(b.numel() * b.element_size() for b in cnn.buffers())
    assert info.num_params == params
    assert info.size_bytes == params * 4 + buffer_bytes


def test_last_input_is_recorded_after_a_forward_call_and_only_the_last():
    net = models.mlp()
    assert jms.find_models({"net": net})[0].last_input is None
    net(torch.randn(2, 8))
    net(torch.randn(5, 8))
    (info,) = jms.find_models({"net": net})
    assert [(s.name, s.shape, s.dtype) for s in info.last_input] == [("input", (5, 8), "float32")]


def test_recorded_input_is_the_callers_tensor_not_a_copy():
    # recording costs no copy: the example is the caller's tensor (detached: no autograd graph)
    from jupyter_modelsave.core.discovery import last_inputs

    net = models.mlp()
    jms.watch(net)
    x = torch.ones(1, 8, requires_grad=True)
    net(x)
    kept = last_inputs(net).args[0]
    assert kept.data_ptr() == x.data_ptr() and not kept.requires_grad


def test_unwatch_removes_the_hook():
    net = models.mlp()
    jms.watch(net)
    assert len(net._forward_pre_hooks) == 1
    jms.unwatch(net)
    assert len(net._forward_pre_hooks) == 0


def test_default_namespace_is_the_callers_globals(monkeypatch):
    # outside IPython: an InteractiveShell left by another test would be the default namespace
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    globals()["module_level_model"] = models.mlp()
    try:
        assert "module_level_model" in [m.name for m in jms.find_models()]
    finally:
        del globals()["module_level_model"]


def test_watch_refuses_non_modules():
    import pytest

    with pytest.raises(jms.NotAModelError):
        jms.watch("not a model")


def test_stage_does_not_replace_the_recorded_input_with_its_own_probes():
    from jupyter_modelsave.core.discovery import last_inputs

    net = models.mlp()
    jms.watch(net)
    net(torch.randn(4, 8))
    staged = jms.stage(net, dynamic_axes={"input": {0: "batch"}})
    assert staged.report.passed and len(staged.report.probes) == 7  # it ran the model 7 more times
    staged.verify()
    assert last_inputs(net).args[0].shape == (4, 8)
    net(torch.randn(6, 8))  # the user's own calls are still recorded
    assert last_inputs(net).args[0].shape == (6, 8)


def test_model_info_names_the_framework_and_its_formats():
    (info,) = jms.find_models({"net": models.mlp()})
    assert (info.framework, info.formats) == ("torch", jms.formats())
    assert info.to_dict()["formats"] == jms.formats()
