"""The reused torchlib registry changes the cost of an export, not its result."""

import onnx
import pytest
import torch

import jupyter_modelsave as jms
from jupyter_modelsave.core.formats import _torchlib_cache

from . import models

pytestmark = pytest.mark.skipif(not _torchlib_cache.supported(), reason="torch version not covered")


def _graph(path) -> bytes:
    return onnx.load(str(path)).graph.SerializeToString()


def test_graph_is_identical_to_a_bare_dynamo_export(tmp_path):
    torch.manual_seed(0)
    model = models.SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    jms.stage(model, x, parity=False).discard()  # warm the cache
    staged = jms.stage(model, x, parity=False, dynamic_axes={"image": {0: "batch"}})
    batch = torch.export.Dim("batch")
    bare = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes={"image": {0: batch}},
                             input_names=["image"], output_names=["output"], verbose=False)  # fmt: skip
    bare.save(str(tmp_path / "bare.onnx"))
    assert staged.exporter == "dynamo"
    assert _graph(staged.path) == _graph(tmp_path / "bare.onnx")


def test_registry_is_built_once_and_handed_out_as_independent_copies(monkeypatch):
    from torch.onnx._internal.exporter._registration import ONNXRegistry

    original = ONNXRegistry.__dict__["from_torchlib"]
    built = []

    def counting(cls, *args, **kwargs):
        built.append(1)
        return original.__func__(cls, *args, **kwargs)

    monkeypatch.setattr(_torchlib_cache, "_CACHE", {})
    monkeypatch.setattr(ONNXRegistry, "from_torchlib", classmethod(counting))
    before = ONNXRegistry.__dict__["from_torchlib"]
    with _torchlib_cache.reused_torchlib_registry() as used:
        first = ONNXRegistry.from_torchlib(opset_version=20)
        second = ONNXRegistry.from_torchlib(opset_version=20)
    assert used and len(built) == 1
    first.functions.clear()
    assert second.functions  # a copy: clearing one leaves the other whole
    assert ONNXRegistry.__dict__["from_torchlib"] is before  # restored after the block
