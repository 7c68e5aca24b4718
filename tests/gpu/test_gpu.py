"""The export path on CUDA: run by the GPU machine; skipped where there is no CUDA device."""

import pytest
import torch

import jupyter_modelsave as jms

from .. import models

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_cuda_model_is_exported_on_cuda_and_stays_there(tmp_path):
    cnn = models.SmallCNN().cuda().train()
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    staged = jms.stage(
        cnn, torch.randn(4, 3, 32, 32, device="cuda"), dynamic_axes={"image": {0: "batch"}}
    )
    assert staged.report.reference_device.startswith("cuda")
    assert staged.report.passed, staged.report.diagnosis
    assert staged.report.tf32 is False
    assert all(p.is_cuda for p in cnn.parameters()) and cnn.training
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
    path = staged.write(tmp_path)
    assert jms.load(path).get_inputs()[0].name == "image"


def test_cpu_example_inputs_follow_a_cuda_model():
    net = models.mlp().cuda()
    staged = jms.stage(net, torch.randn(2, 8))
    assert staged.input_specs[0].device.startswith("cuda")
    assert staged.report.passed


def test_tf32_setting_is_restored_after_the_reference_run():
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        jms.stage(models.mlp().cuda(), torch.randn(2, 8, device="cuda")).discard()
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


def test_find_models_reports_cuda_device_without_synchronising():
    net = models.mlp().cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        (info,) = jms.find_models({"net": net})
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert info.device == "cuda:0"
