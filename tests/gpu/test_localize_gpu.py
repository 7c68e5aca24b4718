"""Localization of a model that lives on CUDA: run by the GPU machine; skipped without CUDA."""

import pytest
import torch

import jupyter_modelsave as jms

from ..test_localize import Net, positive_example

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "torch_export"])
def test_a_cuda_model_s_changed_last_layer_is_named_and_the_model_stays_on_cuda(fmt):
    torch.manual_seed(0)
    model = Net().cuda()
    staged = jms.stage(model, torch.randn(4, 8, device="cuda"), format=fmt)
    with torch.no_grad():
        model.head.weight.mul_(1.5)
    report = staged.verify()
    assert report.first_divergence.module == "head"
    assert all(p.is_cuda for p in model.parameters())


def test_a_baked_branch_of_a_cuda_model_names_its_block():
    torch.manual_seed(0)
    model = Net(branch=2).cuda()
    staged = jms.stage(model, positive_example().cuda(), exporter="torchscript")
    assert staged.report.first_divergence.module == "blocks.2"
    assert all(p.is_cuda for p in model.parameters())
