"""Artifacts saved from a CUDA model load on the CPU (and back on CUDA); skipped without CUDA."""

import pytest
import torch

import jupyter_modelsave as jms

from .. import models

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def cuda_cnn():
    torch.manual_seed(0)
    return models.SmallCNN().cuda(), torch.randn(2, 3, 16, 16, device="cuda")


@pytest.mark.parametrize("fmt", ["safetensors", "state_dict", "checkpoint"])
def test_cuda_weights_load_on_the_cpu_and_into_a_cpu_model(tmp_path, cuda_cnn, fmt):
    cnn, _ = cuda_cnn
    staged = jms.stage(cnn, format=fmt)
    assert staged.report.passed, staged.report.diagnosis
    path = staged.write(tmp_path)
    loaded = jms.load(path)  # map_location="cpu" by default
    state = loaded["model_state"] if fmt == "checkpoint" else loaded
    assert all(t.device.type == "cpu" for t in state.values())
    assert all(torch.equal(state[k], v.cpu()) for k, v in cnn.state_dict().items())
    on_gpu = jms.load(path, map_location="cuda")
    on_gpu = on_gpu["model_state"] if fmt == "checkpoint" else on_gpu
    assert all(t.is_cuda for t in on_gpu.values())
    cpu_model = models.SmallCNN()
    jms.load_into(cpu_model, path)
    assert torch.equal(cpu_model.head.weight, cnn.head.weight.cpu())


@pytest.mark.parametrize("fmt", ["torchscript", "torch_export"])
def test_cuda_programs_run_on_the_cpu(tmp_path, cuda_cnn, fmt):
    cnn, x = cuda_cnn
    staged = jms.stage(cnn, x, format=fmt, dynamic_axes={"image": {0: "batch"}})
    assert staged.report.passed, staged.report.diagnosis
    assert staged.report.reference_device.startswith("cuda")
    loaded = jms.load(staged.write(tmp_path), map_location="cpu")
    run = loaded if fmt == "torchscript" else loaded.module()
    probe = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = models.SmallCNN().eval()
        expected.load_state_dict({k: v.cpu() for k, v in cnn.state_dict().items()})
        torch.testing.assert_close(run(probe), expected(probe), rtol=1e-3, atol=1e-4)


def test_base64_of_a_cuda_model_decodes_on_the_cpu(cuda_cnn):
    cnn, _ = cuda_cnn
    state = jms.from_base64(jms.to_base64(cnn, format="safetensors"))
    assert all(torch.equal(state[k], v.cpu()) for k, v in cnn.state_dict().items())
