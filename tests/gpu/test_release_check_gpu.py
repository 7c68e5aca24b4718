"""The release check on CUDA: run by the GPU machine; skipped where there is no CUDA device."""

import pytest
import torch

import jupyter_modelsave as jms
from jupyter_modelsave.core import _ort

from .. import models

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _ort_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _snapshot(model: torch.nn.Module) -> list[tuple]:
    return [(n, t.dtype, t.device, t.clone()) for n, t in model.state_dict().items()]


def _unchanged(before: list[tuple], model: torch.nn.Module) -> bool:
    return all(a[:3] == b[:3] and torch.equal(a[3], b[3]) for a, b in zip(before, _snapshot(model)))


@pytest.mark.skipif(not _ort_cuda(), reason="needs onnxruntime-gpu (the CUDA provider)")
def test_fp16_latency_is_measured_on_the_cuda_provider():
    cnn = models.SmallCNN().cuda()
    before = _snapshot(cnn)
    staged = jms.stage(cnn, torch.randn(8, 3, 32, 32, device="cuda"), precision="fp16")
    assert staged.report.passed, staged.report.diagnosis
    latency = staged.latency
    assert latency["runtime"] == "onnxruntime CUDAExecutionProvider"
    assert latency["device"].startswith("cuda") and latency["batch"] == 8
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] and latency["eager_p50_ms"] > 0
    assert _unchanged(before, cnn)


@pytest.mark.skipif(not _ort.has_bf16(), reason="ONNX Runtime here has no bf16 kernels")
def test_bf16_onnx_runs_where_the_runtime_has_bf16_kernels():
    cnn = models.SmallCNN().cuda()
    staged = jms.stage(cnn, torch.randn(4, 3, 16, 16, device="cuda"), precision="bf16")
    assert staged.precision == "bf16" and staged.report.precision == "bf16"
    assert staged.report.agreement["outputs"]["output"]["metric"] == "top1"


def test_variants_of_a_gpu_model_leave_it_on_its_gpu_in_float32():
    cnn = models.SmallCNN().cuda().train()
    before = _snapshot(cnn)
    x = torch.randn(4, 3, 16, 16, device="cuda")
    fast = {"max_runs": 5, "max_seconds": 1.0}
    for options in ({"precision": "fp16"}, {"precision": "int8"},
                    {"format": "safetensors", "precision": "bf16"},
                    {"format": "torch_export"}):  # fmt: skip
        staged = jms.stage(cnn, x, latency=fast, **options)
        assert staged.report.passed, (options, staged.report.diagnosis)
        if staged.latency is not None:  # graph formats: the model eager on its GPU
            assert staged.latency["device"].startswith("cuda")
        staged.discard()
        assert _unchanged(before, cnn) and cnn.training, options
    assert all(p.is_cuda and p.dtype == torch.float32 for p in cnn.parameters())


def test_torch_export_latency_runs_the_program_on_the_gpu():
    net = models.mlp().cuda()
    staged = jms.stage(net, torch.randn(16, 8, device="cuda"), format="torch_export",
                       latency={"max_runs": 5, "max_seconds": 1.0})  # fmt: skip
    assert staged.latency["runtime"] == "torch (torch_export)"
    assert staged.latency["device"].startswith("cuda") and staged.latency["runs"] >= 1
