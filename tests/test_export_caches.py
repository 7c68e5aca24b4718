"""The export caches (torchlib registry, traced programs) change the cost of an export, not its result."""

import onnx
import pytest
import torch

import jupyter_modelsave as jms
from jupyter_modelsave.core.formats import _torchlib_cache

from . import models

pytestmark = pytest.mark.skipif(not _torchlib_cache.supported(), reason="torch version not covered")


def _graph(path) -> bytes:
    """The computation: nodes, initializers, inputs and outputs, without exporter annotations."""
    graph = onnx.load(str(path)).graph
    for item in [*graph.node, *graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        del item.metadata_props[:]
    del graph.metadata_props[:]
    return graph.SerializeToString()


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


@pytest.mark.parametrize("opset", [18, 20, 23, None])
def test_a_registry_derived_for_an_opset_is_the_one_torch_builds(monkeypatch, opset):
    from torch.onnx._internal.exporter._registration import ONNXRegistry

    def contents(registry):
        return {target: [(m.onnx_function, m.opset_introduced) for m in metas]
                for target, metas in registry.functions.items()}  # fmt: skip

    args = {} if opset is None else {"opset_version": opset}
    own = ONNXRegistry.from_torchlib(**args)
    monkeypatch.setattr(_torchlib_cache, "_CACHE", {})
    with _torchlib_cache.reused_torchlib_registry():
        ONNXRegistry.from_torchlib(opset_version=19)  # another opset first: this one is derived
        derived = ONNXRegistry.from_torchlib(**args)
    assert type(derived) is ONNXRegistry and derived.opset_version == own.opset_version
    assert contents(derived) == contents(own)


REUSED = "dynamo: reused the traced program of this model's previous stage"
REUSED_GRAPH = "dynamo: reused the ONNX graph of this model's previous stage"


def test_restaging_with_other_opset_names_and_metadata_reuses_the_traced_program(tmp_path):
    model = models.TwoInputs().eval()
    inputs = (torch.randn(2, 4), torch.randn(2, 6))
    axes = {"left": {0: "batch"}, "right": {0: "batch"}}
    first = jms.stage(model, inputs, dynamic_axes=axes, parity=False)
    assert REUSED not in first.warnings
    second = jms.stage(model, inputs, dynamic_axes=axes, opset=18, metadata={"v": 2},
                       output_names=["sum"])  # fmt: skip
    assert REUSED in second.warnings
    assert second.report.passed and second.opset == 18
    assert [o.name for o in onnx.load(str(second.path)).graph.output] == ["sum"]
    batch = torch.export.Dim("batch")
    bare = torch.onnx.export(model, inputs, dynamo=True, opset_version=18, output_names=["sum"],
                             dynamic_shapes={"left": {0: batch}, "right": {0: batch}},
                             verbose=False)  # fmt: skip
    bare.save(str(tmp_path / "bare.onnx"))
    assert _graph(second.path) == _graph(tmp_path / "bare.onnx")


def test_restaging_with_other_names_and_metadata_reuses_the_onnx_graph(tmp_path):
    model = models.TwoInputs().eval()
    inputs = (torch.randn(2, 4), torch.randn(2, 6))
    axes = {"left": {0: "batch"}, "right": {0: "batch"}}
    jms.stage(model, inputs, dynamic_axes=axes, parity=False).discard()
    again = jms.stage(model, inputs, dynamic_axes={"a": axes["left"], "b": axes["right"]},
                      input_names=["a", "b"], output_names=["total"], metadata={"v": 3})  # fmt: skip
    assert REUSED_GRAPH in again.warnings
    assert again.report.passed
    proto = onnx.load(str(again.path))
    assert [i.name for i in proto.graph.input] == ["a", "b"]
    assert [o.name for o in proto.graph.output] == ["total"]
    assert {p.key: p.value for p in proto.metadata_props}["v"] == "3"
    batch = torch.export.Dim("batch")
    bare = torch.onnx.export(model, inputs, dynamo=True, input_names=["a", "b"],
                             output_names=["total"], verbose=False,
                             dynamic_shapes={"left": {0: batch}, "right": {0: batch}})  # fmt: skip
    bare.save(str(tmp_path / "bare.onnx"))
    assert _graph(again.path) == _graph(tmp_path / "bare.onnx")
    # the cache renamed its graph; a third stage with the first names gets those back
    third = jms.stage(model, inputs, dynamic_axes=axes, parity=False)
    assert [i.name for i in onnx.load(str(third.path)).graph.input] == ["left", "right"]


def test_an_in_place_weight_update_invalidates_the_cached_program():
    model = models.mlp().eval()
    x = torch.randn(2, 8)
    jms.stage(model, x, parity=False).discard()
    with torch.no_grad():
        model[0].weight.add_(1.0)  # what optimizer.step() does
    again = jms.stage(model, x)
    assert REUSED not in again.warnings and REUSED_GRAPH not in again.warnings
    assert again.report.passed  # the artifact carries the new weights


def test_other_input_shapes_or_axes_invalidate_the_cached_program():
    model = models.mlp().eval()
    jms.stage(model, torch.randn(2, 8), parity=False).discard()
    assert REUSED_GRAPH not in jms.stage(model, torch.randn(3, 8), parity=False).warnings
    assert REUSED_GRAPH not in jms.stage(model, torch.randn(3, 8), parity=False,
                                         dynamic_axes={"input": {0: "n"}}).warnings  # fmt: skip
    assert REUSED_GRAPH in jms.stage(model, torch.randn(3, 8), parity=False,
                                     dynamic_axes={"input": {0: "n"}}).warnings  # fmt: skip


def test_an_opset_change_skips_the_decompositions_and_gives_the_bare_graph(tmp_path, monkeypatch):
    from torch.onnx._internal.exporter import _core

    # Given torch's decomposition step, counted
    original = _core._prepare_exported_program_for_export
    runs = []

    def counted(program, *, registry):
        runs.append(1)
        return original(program, registry=registry)

    monkeypatch.setattr(_core, "_prepare_exported_program_for_export", counted)
    torch.manual_seed(0)
    model = models.SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    # When a model is staged, then staged again with another opset
    jms.stage(model, x, parity=False).discard()
    again = jms.stage(model, x, opset=18)
    # Then torch decomposed it once only, and the graph is a bare opset-18 export's
    assert len(runs) == 1 and REUSED in again.warnings
    assert again.report.passed and again.opset == 18
    bare = torch.onnx.export(model, (x,), dynamo=True, opset_version=18, input_names=["image"],
                             output_names=["output"], verbose=False)  # fmt: skip
    bare.save(str(tmp_path / "bare.onnx"))
    assert _graph(again.path) == _graph(tmp_path / "bare.onnx")
