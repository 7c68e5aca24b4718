"""Localization: the first module of the live model whose output differs in the artifact."""

from __future__ import annotations

import inspect
import json

import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import jupyter_modelsave as jms
from jupyter_modelsave.core import parity

IF_LINE = "h = h * 2 if h.mean() > 0 else -h"


class Block(nn.Module):
    def __init__(self, branchy: bool = False, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.act = act()
        self.branchy = branchy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.lin(x)) + x
        if self.branchy:
            h = h * 2 if h.mean() > 0 else -h
        return h


class EarlyBranchBlock(Block):
    """The `if` runs on the block's input, before it calls ``lin``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branchy and x.mean() > 0:
            x = x * 2
        return self.act(self.lin(x)) + x


class Net(nn.Module):
    def __init__(self, branch: int = -1, block: type[Block] = Block,
                 act: type[nn.Module] = nn.ReLU) -> None:  # fmt: skip
        super().__init__()
        self.blocks = nn.ModuleList([block(i == branch, act) for i in range(4)])
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class BranchAtTheEnd(Net):
    """Every submodule is exact; the model's own forward bakes a branch after them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y * 2 if y.mean() > 0 else -y


class Reused(nn.Module):
    """``blk`` runs twice and its ``act`` twice per run: four calls of one module."""

    def __init__(self) -> None:
        super().__init__()
        self.blk = nn.Sequential(nn.Linear(8, 8), nn.Tanh())
        self.act = nn.Tanh()
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.act(self.blk(x)))
        return self.head(self.act(self.act(self.blk(x))))


def line_of(cls: type, text: str) -> str:
    """``file:line`` of the line of ``cls.forward`` holding ``text``."""
    lines, start = inspect.getsourcelines(cls.forward)
    offset = next(i for i, line in enumerate(lines) if text in line)
    return f"{inspect.getsourcefile(cls.forward)}:{start + offset}"


def positive_example() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(4, 8) + 3  # every block's mean is positive: the `if` is traced that way


@pytest.fixture(scope="module", params=[("onnx", "torchscript"), ("torchscript", None)],
                ids=["onnx-torchscript-exporter", "torchscript-archive"])  # fmt: skip
def branch_staged(request):
    torch.manual_seed(0)
    model = Net(branch=2)
    fmt, exporter = request.param
    options = {"exporter": exporter} if exporter else {}
    staged = jms.stage(model, positive_example(), format=fmt, **options)
    yield staged
    staged.discard()


def test_a_python_if_in_the_third_block_names_that_block_its_class_and_source_line(branch_staged):
    staged = branch_staged
    report = staged.report
    # Given a model whose third block holds a Python `if` on tensor values (tracing baked one side)
    assert not report.passed
    # Then that block is named, with its class and the line of the `if`
    first = report.first_divergence
    assert (first.module, first.class_name, first.call) == ("blocks.2", "Block", 0)
    assert first.source == line_of(Block, IF_LINE) and first.code == IF_LINE
    assert first.cosine < 0.5 and first.max_abs > 1 and not first.passed
    # And every module call that finished before it agrees, in the order calls finish
    names = [layer.module for layer in report.layers]
    before = names[: names.index("blocks.2")]
    assert before == ["blocks.0.lin", "blocks.0.act", "blocks.0", "blocks.1.lin", "blocks.1.act",
                      "blocks.1", "blocks.2.lin", "blocks.2.act"]  # fmt: skip
    assert all(layer.passed for layer in report.layers[: len(before)])
    assert "'blocks.2' (Block, " in report.localization and "first module" in report.localization


def test_onnx_names_the_nodes_that_compute_the_diverging_module(branch_staged):
    staged = branch_staged
    first = staged.report.first_divergence
    if staged.format != "onnx":
        assert first.nodes == []  # a TorchScript archive has no graph view to select nodes in
        return
    graph = onnx.load(str(staged.path)).graph
    by_name = {node.name: node for node in graph.node}
    # Then the nodes exist in the artifact, and the one making the block's output comes first
    assert first.nodes and set(first.nodes) <= set(by_name)
    assert all(by_name[n].op_type != "Constant" for n in first.nodes)
    block_output = _producer_of_block_output(graph, "blocks.3.lin")
    assert by_name[first.nodes[0]].output[0] == block_output


def _producer_of_block_output(graph, next_module: str) -> str:
    """The value the first node of ``next_module`` reads (TorchScript names: ``/blocks.3/lin/``)."""
    scope = "/" + next_module.replace(".lin", "/lin/")
    reader = next(n for n in graph.node if n.name.startswith(scope))
    return reader.input[0]


def test_a_branch_before_a_submodule_call_names_the_block_not_the_submodule():
    # Given a block whose `if` changes its input before it calls `lin`
    torch.manual_seed(0)
    model = Net(branch=2, block=EarlyBranchBlock)
    staged = jms.stage(model, positive_example(), exporter="torchscript")
    report = staged.report
    # Then `lin` is the first output that differs, but its input already differs: the block's
    # own code is named
    lin = next(layer for layer in report.layers if not layer.passed)
    assert lin.module == "blocks.2.lin"
    first = report.first_divergence
    assert (first.module, first.class_name) == ("blocks.2", "EarlyBranchBlock")
    assert first.source == line_of(EarlyBranchBlock, "if self.branchy and x.mean() > 0:")
    assert "whose input already differs" in report.localization


def test_a_model_that_passes_has_no_first_divergence():
    torch.manual_seed(0)
    model = Net()
    staged = jms.stage(model, torch.randn(4, 8))
    # Then nothing was localized
    report = staged.report
    assert report.passed and report.first_divergence is None
    assert report.layers == [] and report.localization is None
    assert report.to_dict()["first_divergence"] is None
    # And on request every module agrees
    assert staged.localize() is report
    assert report.first_divergence is None and "No module's output differs" in report.localization
    assert len(report.layers) == 14 and all(layer.passed for layer in report.layers)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "torch_export"])
def test_a_last_layer_that_alone_differs_is_named(fmt):
    torch.manual_seed(0)
    model = Net()
    staged = jms.stage(model, torch.randn(4, 8), format=fmt)
    assert staged.report.passed
    # When the live model's last layer alone changes after staging
    with torch.no_grad():
        model.head.weight.mul_(1.5)
    report = staged.verify()
    # Then verify localizes, and names the last layer
    assert not report.passed
    first = report.first_divergence
    assert (first.module, first.class_name) == ("head", "Linear")
    assert [layer.module for layer in report.layers if not layer.passed] == ["head", ""]
    assert first.source.startswith(inspect.getsourcefile(nn.Linear.forward))
    staged.discard()


@pytest.fixture(scope="module")
def gelu_onnx():
    """A dynamo export whose blocks use GELU, and a function to run it after editing the graph."""
    torch.manual_seed(0)
    model = Net(act=nn.GELU)
    staged = jms.stage(model, torch.randn(4, 8), exporter="dynamo")
    assert staged.report.passed and staged.exporter == "dynamo"
    original = staged.path.read_bytes()

    def edited(change):
        staged.path.write_bytes(original)
        graph = onnx.load(str(staged.path))
        change(graph.graph)
        onnx.save(graph, str(staged.path))
        staged.verify()
        return staged

    yield edited
    staged.discard()


def _initializer(graph, name: str):
    return next(t for t in graph.initializer if t.name == name)


def test_a_tampered_last_initializer_is_found_in_the_last_layer(gelu_onnx):
    def tamper(graph):
        weight = _initializer(graph, "head.weight")
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))

    report = gelu_onnx(tamper).report
    first = report.first_divergence
    assert (first.module, first.class_name) == ("head", "Linear")
    # dynamo's stack trace gives the line inside Linear.forward that makes the output
    assert first.code == "return F.linear(input, self.weight, self.bias)"


def test_an_intermediate_difference_that_later_layers_hide_is_reported_on_request(gelu_onnx):
    def approximate(graph):  # the second block's GELU as the tanh approximation
        gelu = [n for n in graph.node if n.op_type == "Gelu"][1]
        del gelu.attribute[:]
        gelu.attribute.append(onnx.helper.make_attribute("approximate", "tanh"))

    # Given a difference of ~5e-4 in one GELU, which the output no longer shows
    staged = gelu_onnx(approximate)
    assert staged.report.passed and staged.report.first_divergence is None
    # When localized on request
    report = staged.localize()
    first = report.first_divergence
    assert (first.module, first.class_name) == ("blocks.1.act", "GELU")
    assert first.cosine > 0.99  # close, but beyond the tolerances
    assert report.localization.endswith("later layers hide it.")


def test_a_precision_change_is_found(gelu_onnx):
    def half_precision(graph):  # the third block's weights rounded to bfloat16
        weight = _initializer(graph, "blocks.2.lin.weight")
        rounded = torch.tensor(numpy_helper.to_array(weight)).bfloat16().float().numpy()
        weight.CopyFrom(numpy_helper.from_array(rounded, weight.name))

    report = gelu_onnx(half_precision).report
    assert (report.first_divergence.module, report.first_divergence.class_name) == (
        "blocks.2.lin", "Linear"
    )  # fmt: skip


class Upsampler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.up(self.conv(x)))


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_an_operator_translated_differently_is_found(exporter):
    torch.manual_seed(0)
    staged = jms.stage(Upsampler(), torch.randn(1, 3, 8, 8), exporter=exporter)
    assert staged.report.passed
    # When the Resize is translated with other coordinates (align_corners=False went to
    # "asymmetric" in old exporters)
    graph = onnx.load(str(staged.path))
    (resize,) = [n for n in graph.graph.node if n.op_type == "Resize"]
    (mode,) = [a for a in resize.attribute if a.name == "coordinate_transformation_mode"]
    mode.s = b"asymmetric"
    onnx.save(graph, str(staged.path))
    report = staged.verify()
    # Then the upsampling module is named, with its node
    first = report.first_divergence
    assert (first.module, first.class_name) == ("up", "Upsample")
    assert resize.name in first.nodes
    assert [layer.passed for layer in report.layers[:1]] == [True]  # conv agrees


def test_divergence_only_at_the_final_output_is_said_plainly():
    torch.manual_seed(0)
    model = BranchAtTheEnd()
    staged = jms.stage(model, positive_example(), exporter="torchscript")
    report = staged.report
    first = report.first_divergence
    assert (first.module, first.class_name) == ("", "BranchAtTheEnd")
    assert first.source == line_of(BranchAtTheEnd, "return y * 2 if y.mean() > 0 else -y")
    assert report.localization.startswith("Only the final output differs")
    assert "every module inside BranchAtTheEnd agrees" in report.localization
    assert all(layer.passed for layer in report.layers if layer.module)
    assert "only the model's final output differs" in parity.divergence_text(report)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_every_call_of_a_module_used_several_times_is_compared(exporter):
    torch.manual_seed(0)
    model = Reused()
    staged = jms.stage(model, torch.randn(2, 8), exporter=exporter)
    report = staged.localize()
    calls = {(layer.module, layer.call) for layer in report.layers}
    # Then the four calls of `act` and both calls of `blk` are compared, and agree
    assert {("act", k) for k in range(4)} <= calls
    assert {("blk", 0), ("blk", 1), ("head", 0), ("", 0)} <= calls
    assert all(layer.passed for layer in report.layers)


def test_hooks_training_flags_and_values_are_as_before():
    torch.manual_seed(0)
    model = Net(branch=2)
    model.train()
    model.blocks[1].eval()
    model.head.weight.requires_grad_(False)
    seen = []
    model.blocks[0].register_forward_hook(lambda m, a, out: seen.append("hook"))
    model.register_forward_pre_hook(lambda m, a: None)
    hooks = [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()]
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    staged = jms.stage(model, positive_example(), exporter="torchscript")
    staged.localize()
    assert staged.report.first_divergence.module == "blocks.2"
    # Then hooks, flags and values are as before
    assert [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()] == hooks
    assert [m.training for m in model.modules()] == flags
    assert not model.head.weight.requires_grad and model.blocks[0].lin.weight.requires_grad
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    # And the user's own hook kept working during the live runs
    assert seen


def test_to_dict_the_manifest_and_the_html_carry_the_first_divergence(branch_staged, tmp_path):
    staged = branch_staged
    data = staged.report.to_dict()
    first = data["first_divergence"]
    assert first["module"] == "blocks.2" and first["class_name"] == "Block"
    for key in ("max_abs", "max_rel", "cosine", "source", "nodes"):
        assert key in first
    assert [layer["module"] for layer in data["layers"]][-1] == ""
    json.dumps(data, allow_nan=False)
    # The manifest carries the same
    path = staged.write(tmp_path, allow_mismatch=True)
    manifest = json.loads(path.with_name(path.name + ".json").read_text())
    assert manifest["parity"]["first_divergence"] == first
    assert manifest["parity"]["localization"] == staged.report.localization
    # And the HTML shows the first diverging module before the parity table
    page = staged.report._repr_html_()
    assert page.index("First diverging module") < page.index("<th>probe</th>")
    assert "<code>&#x27;blocks.2&#x27;</code> (Block)" in page


def test_folder_artifacts_are_localized_on_their_mapped_weights(tmp_path):
    torch.manual_seed(0)
    model = Net()
    staged = jms.stage(model, torch.randn(4, 8), external_data=True)
    assert staged.path.is_dir()
    with torch.no_grad():
        model.blocks[1].lin.bias.add_(1.0)
    report = staged.verify()
    assert report.first_divergence.module == "blocks.1.lin"


def test_batches_of_calls_give_the_same_figures_as_one_run(monkeypatch):
    from jupyter_modelsave.core.localize import _compare

    torch.manual_seed(0)
    model = Net()
    staged = jms.stage(model, torch.randn(4, 8))
    with torch.no_grad():
        model.blocks[2].lin.weight.mul_(1.1)
    runs = []
    monkeypatch.setattr(_compare, "batches", _counted(_compare.batches, runs))
    one = [(layer.module, layer.max_abs, layer.cosine) for layer in staged.localize().layers]
    # When every call gets a batch (and an ONNX Runtime run) of its own
    monkeypatch.setattr(_compare, "BATCH_BYTES", 1)
    many = [(layer.module, layer.max_abs, layer.cosine) for layer in staged.localize().layers]
    # Then the figures are the same
    assert runs == [1, 14] and many == one
    assert staged.report.first_divergence.module == "blocks.2.lin"


def _counted(batches, runs):
    def counting(calls, limit):
        groups = batches(calls, limit)
        runs.append(len(groups))
        return groups

    return counting


def test_a_forward_that_calls_other_modules_each_time_is_not_localized():
    class Growing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act = nn.ReLU()
            self.runs = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.runs += 1
            for _ in range(self.runs % 3 + 1):
                x = self.act(x)
            return x

    staged = jms.stage(
        Growing(), torch.randn(2, 3), exporter="torchscript", parity=False, latency=False
    )  # latency would add forward calls
    staged.verify()
    report = staged.localize()
    assert report.first_divergence is None and report.layers == []
    assert report.localization.startswith("Not localized: the model's module calls changed")


def test_what_cannot_be_localized_says_why(tmp_path):
    torch.manual_seed(0)
    weights = jms.stage(Net(), format="safetensors")
    with pytest.raises(jms.InvalidOptionError, match="intermediate outputs of graph artifacts"):
        weights.localize()
    unchecked = jms.stage(Net(), torch.randn(2, 8), parity=False)
    with pytest.raises(jms.InvalidOptionError, match="parity=False"):
        unchecked.localize()
    unchecked.discard()
    with pytest.raises(jms.InvalidOptionError, match="discarded"):
        unchecked.localize()


def test_the_magic_prints_the_first_diverging_module_under_the_parity_table(
    tmp_path, monkeypatch, capsys
):
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.chdir(tmp_path)
    shown = []
    monkeypatch.setattr("jupyter_modelsave.magics.display", shown.append)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "jupyter_modelsave")
    torch.manual_seed(0)
    shell.user_ns.update(branchy=Net(branch=2), x=positive_example())
    try:
        result = shell.run_cell("%modelsave branchy out/ --input x")
    finally:
        del shell.user_ns["branchy"], shell.user_ns["x"]
    out = capsys.readouterr().out
    assert isinstance(result.error_in_exec, jms.ParityError)
    # Then, after the parity table, the module, its class, its source line and its code
    assert "First diverging module" in shown[-1].data
    text = out[out.index("First diverging module") :]
    assert text.startswith(
        f"First diverging module: 'blocks.2' (Block) at {line_of(Block, IF_LINE)}"
    )
    assert text.splitlines()[1] == f"    {IF_LINE}"
    assert text.index(IF_LINE) < text.index("ParityError: Not written")


def test_the_widget_shows_the_first_diverging_module_under_the_parity_table():
    from jupyter_modelsave.widgets import ModelSaveWidget

    torch.manual_seed(0)
    namespace = {"torch": torch, "branchy": Net(branch=2), "x": positive_example()}
    widget = ModelSaveWidget("branchy", namespace=namespace, dest="unused/")
    widget.input_expr.value = "x"
    staged = widget.stage()
    assert staged is not None and not staged.report.passed
    page = widget.report.value
    table_end = page.index("</table>", page.index("<th>probe</th>"))
    below = page[table_end:]
    assert "First diverging module: &#x27;blocks.2&#x27; (Block) at " in below
    assert html_escape(line_of(Block, IF_LINE)) in below
    staged.discard()


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


def test_the_sidebar_summary_carries_the_localization(branch_staged):
    from jupyter_modelsave import kernel

    summary = kernel.summary(branch_staged)
    kernel._wire(summary)  # plain JSON the Comm carries
    report = summary["report"]
    assert report["first_divergence"]["module"] == "blocks.2"
    assert report["localization"] == branch_staged.report.localization
    assert [layer["module"] for layer in report["layers"]] == [
        layer.module for layer in branch_staged.report.layers
    ]


def test_a_module_defined_in_a_notebook_cell_is_named_by_its_cell():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    before = set(shell.user_ns)
    cell = inspect.getsource(Block).replace("class Block", "class CellBlock")
    try:
        shell.run_cell("import torch\nfrom torch import nn\n" + cell, store_history=True)
        count = shell.execution_count - 1
        torch.manual_seed(0)
        model = Net(branch=-1)
        model.blocks[2] = shell.user_ns["CellBlock"](branchy=True)
        staged = jms.stage(model, positive_example(), exporter="torchscript")
    finally:
        for name in set(shell.user_ns) - before:
            del shell.user_ns[name]
    first = staged.report.first_divergence
    # Then the source says which cell, as IPython's tracebacks do
    line = 2 + next(i for i, text in enumerate(cell.splitlines()) if IF_LINE in text) + 1
    assert first.module == "blocks.2" and first.source == f"Cell In[{count}], line {line}"
    assert first.code == IF_LINE
