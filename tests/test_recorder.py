"""The call recorder: every model's last top-level call, from the moment a surface is loaded.

Issue 16.2 (inputs known from the first call) and 15.4 (never record tracing, fake, functional
or symbolic tensors).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import warnings
import weakref

import pytest
import torch
from torch import nn

import jupyter_modelsave as jms
from jupyter_modelsave.core import discovery
from jupyter_modelsave.core.discovery import last_inputs

from . import models


@pytest.fixture
def recording():
    discovery.start_recording()
    yield
    discovery.stop_recording()


def shapes(model):
    recorded = last_inputs(model)
    return None if recorded is None else [tuple(s.shape) for s in recorded.specs]


def test_a_model_never_listed_is_recorded_at_its_outermost_call_only(recording):
    # Given a model nobody listed or watched
    net = models.SmallCNN()
    # When the user calls it
    net(torch.randn(2, 3, 8, 8))
    # Then its call is recorded, and not its layers' calls inside it
    assert shapes(net) == [(2, 3, 8, 8)]
    assert last_inputs(net.head) is None and last_inputs(net.features) is None
    # and a layer called on its own is a top-level call of its own
    net.head(torch.randn(5, 8))
    assert shapes(net.head) == [(5, 8)] and shapes(net) == [(2, 3, 8, 8)]
    assert discovery._CALLS.depth == 0


def test_keyword_tensors_are_recorded_by_name(recording):
    net = models.TwoInputs()
    net(torch.randn(3, 4), right=torch.randn(3, 6))
    recorded = last_inputs(net)
    assert recorded.names == ["left", "right"] and list(recorded.kwargs) == ["right"]
    assert jms.find_models({"net": net})[0].last_input[1].shape == (3, 6)


def test_a_failed_call_is_not_recorded_and_the_next_one_is(recording):
    net = models.mlp()
    net(torch.randn(2, 8))
    with pytest.raises(RuntimeError):
        net(torch.randn(2, 5))  # wrong width: fails in the first Linear
    assert shapes(net) == [(2, 8)]
    net(torch.randn(7, 8))
    assert shapes(net) == [(7, 8)]


def test_recording_copies_nothing_but_views_of_larger_tensors_and_inference_tensors(recording):
    net = models.mlp()
    x = torch.randn(4, 8, requires_grad=True)
    net(x)
    kept = last_inputs(net).args[0]
    assert kept.data_ptr() == x.data_ptr() and not kept.requires_grad  # the caller's, detached
    big = torch.randn(10_000, 8)
    net(big[:2])  # a view: keeping it would keep the 10,000 rows alive
    kept = last_inputs(net).args[0]
    assert kept.untyped_storage().nbytes() == 2 * 8 * 4 and torch.equal(kept, big[:2])
    with torch.inference_mode():
        net(torch.randn(3, 8))
    kept = last_inputs(net).args[0]
    assert not kept.is_inference()  # usable outside inference mode, as stage needs
    jms.stage(net).discard()


def test_one_call_per_model_is_kept_and_models_are_not_kept_alive(recording):
    net = models.mlp()
    for batch in range(1, 30):
        net(torch.randn(batch, 8))
    assert shapes(net) == [(29, 8)]
    inputs = weakref.ref(last_inputs(net).args[0])
    alive = weakref.ref(net)
    del net
    gc.collect()
    assert alive() is None and inputs() is None  # the model and its recorded inputs are freed


def test_stop_recording_removes_the_global_hooks():
    from torch.nn.modules import module as torch_module

    hooks = (len(torch_module._global_forward_pre_hooks), len(torch_module._global_forward_hooks))
    discovery.start_recording()
    discovery.start_recording()  # idempotent
    assert len(torch_module._global_forward_pre_hooks) == hooks[0] + 1
    discovery.stop_recording()
    assert (
        len(torch_module._global_forward_pre_hooks),
        len(torch_module._global_forward_hooks),
    ) == hooks
    net = models.mlp()
    net(torch.randn(2, 8))
    assert last_inputs(net) is None


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


def _onnx_export(net, x, tmp_path):
    _quiet(torch.onnx.export, net, (x,), str(tmp_path / "user.onnx"), dynamo=True,
           dynamic_shapes=({0: "batch"},), verbose=False)  # fmt: skip


def _torch_export(net, x, tmp_path):
    torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))


def _jit_trace(net, x, tmp_path):
    _quiet(torch.jit.trace, net, x, check_trace=False)


def _compile(net, x, tmp_path):
    torch.compile(net, backend="eager")(x)


def _fake(net, x, tmp_path):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        net(mode.from_tensor(x))


def _functional(net, x, tmp_path):
    torch.func.functionalize(net)(x)


def _fx(net, x, tmp_path):
    torch.fx.symbolic_trace(net)


USER_TOOLS = {
    "torch.onnx.export": _onnx_export,
    "torch.export.export": _torch_export,
    "torch.jit.trace": _jit_trace,
    "torch.compile": _compile,
    "FakeTensorMode": _fake,
    "torch.func.functionalize": _functional,
    "torch.fx.symbolic_trace": _fx,
}


@pytest.mark.parametrize("how", ["watch", "recorder"])
@pytest.mark.parametrize("tool", USER_TOOLS)
def test_tracing_faking_and_compiling_never_replace_the_recorded_call(how, tool, tmp_path):
    # Given a model whose real call was recorded (by jms.watch, or by the global recorder)
    net = models.mlp().eval()
    if how == "watch":
        jms.watch(net)
    else:
        discovery.start_recording()
    net(torch.randn(3, 8))
    # When the user runs torch's own tracing, exporting or compiling tools on it
    USER_TOOLS[tool](net, torch.randn(6, 8), tmp_path)
    # Then the recorded input is still the real call: plain tensor, integer shape, real data
    recorded = last_inputs(net)
    (tensor,) = recorded.tensors
    assert type(tensor) is torch.Tensor and tensor.shape == (3, 8) and not tensor.is_meta
    (info,) = jms.find_models({"net": net})
    assert [list(s.shape) for s in info.last_input] == [[3, 8]]


def test_a_meta_call_is_not_recorded(recording):
    net = models.mlp()
    net(torch.randn(3, 8))
    meta = models.mlp().to("meta")
    meta(torch.randn(2, 8, device="meta"))
    assert last_inputs(meta) is None and shapes(net) == [(3, 8)]


def test_after_a_users_own_exports_stage_and_write_work_without_inputs(tmp_path):
    # Issue 15.4: a plain torch.onnx.export / torch.export.export poisoned the recorded input
    net = models.mlp().eval()
    jms.watch(net)
    net(torch.randn(3, 8))
    _torch_export(net, torch.randn(5, 8), tmp_path)
    _onnx_export(net, torch.randn(7, 8), tmp_path)
    staged = jms.stage(net)
    assert staged.report.passed and [s.shape for s in staged.input_specs] == [(3, 8)]
    staged.discard()
    path = jms.export(net, tmp_path / "out/", format="safetensors")
    manifest = json.loads(path.with_name(path.name + ".json").read_text())
    assert [i["shape"] for i in manifest["inputs"]] == [[3, 8]]


def test_recording_starts_when_torch_is_imported_after_it_was_asked_for():
    # Given a kernel where %load_ext (or the sidebar) asked for recording before importing torch
    code = (
        "import sys\n"
        "from jupyter_modelsave.core import discovery\n"
        "discovery.start_recording()\n"
        "assert 'torch' not in sys.modules and not discovery.is_recording()\n"
        "import torch\n"
        "assert discovery.is_recording()\n"
        "net = torch.nn.Linear(3, 2)\n"
        "net(torch.randn(4, 3))\n"
        "print(discovery.last_inputs(net).specs[0].shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(4, 3)"


def test_ctrl_c_inside_a_forward_does_not_stop_recording_in_the_next_cell(recording):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    discovery.stop_recording()
    discovery.start_recording()  # registers the depth reset with this shell

    class Interrupted(nn.Module):
        def forward(self, x):
            raise KeyboardInterrupt

    net, stop = models.mlp(), nn.Sequential(nn.Linear(8, 8), Interrupted())
    shell.user_ns.update(net=net, stop=stop, torch=torch)
    shell.run_cell("stop(torch.randn(2, 8))")  # torch skips its exit hooks on KeyboardInterrupt
    shell.run_cell("net(torch.randn(9, 8))")
    assert shapes(net) == [(9, 8)]


def test_the_recorder_causes_no_graph_break_under_torch_compile(recording):
    # dynamo traces the global hooks: they must fold away (is_compiling), not break the graph
    import torch._dynamo

    net = models.SmallCNN().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explained = torch._dynamo.explain(net)(torch.randn(2, 3, 8, 8))
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    assert discovery._CALLS.depth == 0
