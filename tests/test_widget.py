"""The widget's state machine, driven through its Python API (the methods its buttons call)."""

import json
import os
import subprocess
import sys

import onnx
import pytest
import torch

import jupyter_modelsave as jms
from jupyter_modelsave.widgets import ModelSaveWidget, file_browser_url

from . import models


@pytest.fixture
def namespace():
    torch.manual_seed(0)
    ns = {"torch": torch, "net": models.mlp(), "cnn": models.SmallCNN()}
    jms.find_models(ns)  # watch them, so their next call is recorded
    ns["net"](torch.randn(3, 8))
    ns["cnn"](torch.randn(2, 3, 16, 16))
    return ns


def test_it_lists_the_namespace_models_and_one_axis_row_per_input_dimension(namespace):
    # When a widget is made on a namespace with two models
    widget = ModelSaveWidget("cnn", namespace=namespace)
    # Then both models can be picked, and the rows follow the picked model's last input
    assert set(widget.model_picker.options) == {"net", "cnn"}
    assert widget.state == "pick"
    assert [(t, d) for t, d, _, _ in widget.axes] == [("image", d) for d in range(4)]
    assert "image [2, 3, 16, 16] float32" in widget.input_info.value
    # And picking the other model rebuilds the rows for its input
    widget.pick("net")
    assert [(t, d) for t, d, _, _ in widget.axes] == [("input", 0), ("input", 1)]
    assert widget.format_picker.options == tuple(jms.formats())


def test_stage_then_write_goes_from_pick_to_written_with_a_manifest(
    namespace, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the kernel's working directory
    widget = ModelSaveWidget("net", namespace=namespace, dest="out/")
    assert widget.write_button.disabled and not widget.stage_button.disabled
    # When the batch dimension is ticked and the export is staged
    widget.mark_dynamic("input", 0)
    staged = widget.stage()
    # Then the report and the summary are shown, and Write/Discard become available
    assert widget.state == "staged" and widget.error == ""
    assert "parity passed" in widget.report.value and "<table>" in widget.report.value
    assert staged.sha256 in widget.summary.value
    assert widget.progress.value == 1.0
    assert not widget.write_button.disabled and not widget.discard_button.disabled
    # When it is written
    path = widget.write()
    # Then the artifact and its manifest exist, with the symbolic batch dimension
    assert widget.state == "written" and widget.written == path
    assert path.resolve().parent == tmp_path / "out" and path.name.startswith("net_v1.0.0_")
    manifest = json.loads(path.with_name(path.name + ".json").read_text())
    assert manifest["sha256"] == staged.sha256 and manifest["parity"]["passed"]
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    # And the widget shows the path, frees the staged files and cannot write twice
    assert str(path) in widget.result.value and 'href="/lab/tree/out"' in widget.result.value
    assert staged.discarded and widget.staged is None
    assert widget.write_button.disabled


def test_a_model_picked_by_an_accented_variable_name_is_written_under_a_usable_name(tmp_path):
    # Given a model whose variable has an accent (a name the sidebar and the widget pass as is)
    namespace = {"modèle": models.mlp()}
    widget = ModelSaveWidget("modèle", namespace=namespace, dest=f"{tmp_path}/")
    widget.format_picker.value = "safetensors"
    # When it is staged and written, then its artifact name is the variable's, accent dropped
    widget.stage()
    assert widget.error == ""
    assert widget.write().name.startswith("modele_v1.0.0_")


def test_discard_drops_the_staged_files_and_returns_to_pick(namespace, tmp_path):
    widget = ModelSaveWidget("net", namespace=namespace, dest=f"{tmp_path}/")
    staged = widget.stage()
    staged_path = staged.path
    # When the staged export is discarded
    widget.discard()
    # Then its files are gone, the report is cleared and nothing was written
    assert widget.state == "pick" and not staged_path.exists()
    assert widget.report.value == "" and list(tmp_path.iterdir()) == []
    assert widget.write_button.disabled
    # And writing now explains what to do instead of failing silently
    assert widget.write() is None
    assert widget.error == "InvalidOptionError: Nothing is staged: press Stage first."


def test_a_failed_stage_shows_the_error_type_and_message(namespace):
    namespace["odd"] = models.Untraceable()
    widget = ModelSaveWidget("odd", namespace=namespace, dest="unused/")
    widget.input_expr.value = "torch.randn(3, 3)"
    # When the export fails
    assert widget.stage() is None
    # Then the widget is in the error state, showing the core's error in plain words
    assert widget.state == "error"
    assert isinstance(widget.exception, jms.ExportError)
    assert widget.error.startswith("ExportError: ")
    assert "ExportError: " in widget.error_box.value and "Traceback" not in widget.error_box.value
    assert widget.progress.bar_style == "danger"
    # And it can be staged again
    assert not widget.stage_button.disabled and widget.write_button.disabled


def test_a_failed_write_keeps_the_export_staged(namespace, tmp_path):
    taken = tmp_path / "model.onnx"
    taken.write_bytes(b"someone else's file")
    widget = ModelSaveWidget("net", namespace=namespace, dest=str(taken))
    widget.stage()
    # When the destination file already exists
    assert widget.write() is None
    # Then the error says so, the file is untouched and the export can be written elsewhere
    assert widget.error.startswith("ArtifactExistsError: ")
    assert widget.state == "staged" and taken.read_bytes() == b"someone else's file"
    widget.dest.value = str(tmp_path / "other.onnx")
    assert widget.write() == tmp_path / "other.onnx"
    assert widget.error == "" and widget.state == "written"


def test_an_expression_input_replaces_the_recorded_one_and_bad_ones_are_explained(namespace):
    widget = ModelSaveWidget("net", namespace=namespace)
    # When an expression is typed as the example input
    widget.input_expr.value = "torch.randn(5, 8)"
    # Then the axis rows follow its shape
    assert [box.description for _, _, box, _ in widget.axes] == ["input[0] = 5", "input[1] = 8"]
    # When the expression cannot be evaluated
    widget.input_expr.value = "torch.randn(5, nope)"
    # Then the error names it, and staging refuses it the same way
    assert widget.error == (
        "InvalidOptionError: example input 'torch.randn(5, nope)' could not be evaluated: "
        "NameError: name 'nope' is not defined"
    )
    assert widget.stage() is None and widget.state == "error"


def test_bad_tolerances_and_axis_names_are_refused_in_plain_words(namespace):
    widget = ModelSaveWidget("net", namespace=namespace)
    widget.atol.value = "tight"
    assert widget.stage() is None
    assert widget.error == "InvalidOptionError: atol must be a number such as 1e-4, got 'tight'."
    widget.atol.value = ""
    widget.mark_dynamic("input", 0, "not a name")
    assert widget.stage() is None
    assert widget.error.startswith("InvalidOptionError: dynamic_axes['input'][0]: axis name")


def test_copy_as_code_gives_a_call_that_writes_the_same_artifact(namespace, tmp_path):
    widget = ModelSaveWidget("net", namespace=namespace, dest=f"{tmp_path}/a/")
    widget.mark_dynamic("input", 0, "n")
    widget.atol.value = "1e-3"
    namespace["example"] = torch.randn(4, 8)
    widget.input_expr.value = "example"  # the ticked row is kept: same input, same dimension
    widget.mark_dynamic("input", 2)
    assert (
        widget.error == "InvalidOptionError: No input dimension input[2]; rows: input[0], input[1]."
    )
    # When the code is shown
    code = widget.show_code()
    # Then it is the plain call with the options that differ from the defaults
    assert code.splitlines()[-1] == (
        f"jms.export(net, '{tmp_path}/a/', example, "
        "dynamic_axes={'input': {0: 'n'}}, atol=0.001)"
    )
    assert widget.code.layout.display is None
    # And running it writes the artifact the widget writes
    written_by_widget = widget.stage() and widget.write()
    exec(code.replace("/a/", "/b/"), {**namespace, "jms": jms})
    (by_code,) = (tmp_path / "b").glob("*.onnx")
    assert by_code.name == written_by_widget.name


def test_a_model_object_outside_the_namespace_is_listed_under_its_class_name():
    lone = models.TwoInputs()  # two inputs: no example can be guessed from a first layer
    widget = ModelSaveWidget(lone, namespace={})
    assert widget.model_picker.options == ("twoinputs",)
    assert "no recorded input" in widget.input_info.value
    assert widget.axes == []


def test_an_empty_namespace_disables_stage_and_says_why():
    widget = jms.widget(namespace={})
    assert widget.model_picker.value is None and widget.stage_button.disabled
    assert "no models in the namespace" in widget.input_info.value


def test_file_browser_link_is_relative_to_the_server_root(tmp_path, monkeypatch):
    # Given a running Jupyter server (its runtime file) whose root holds the artifact
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    root = tmp_path / "root"
    (runtime / "jpserver-1.json").write_text(
        json.dumps({"pid": os.getpid(), "root_dir": str(root), "base_url": "/user/me/"})
    )
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    # Then the link opens the artifact's folder under that server's base URL
    assert file_browser_url(root / "a b" / "m.onnx") == "/user/me/lab/tree/a%20b"
    # And without a server holding it, the kernel's working directory is the root
    monkeypatch.chdir(tmp_path)
    assert file_browser_url(tmp_path / "x" / "m.onnx") == "/lab/tree/x"
    assert file_browser_url(tmp_path.parent / "elsewhere.onnx") is None


def test_jms_widget_survives_the_widgets_module_being_imported_first():
    # Python binds an imported submodule as an attribute of its package, so a module named
    # "widget" would shadow jms.widget; the module is "widgets"
    code = (
        "import jupyter_modelsave.widgets, jupyter_modelsave as jms;"
        "print(jms.widget.__module__, jms.ModelSaveWidget.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["jupyter_modelsave.widgets", "ModelSaveWidget"]


def test_the_format_picker_offers_the_registry_and_stages_the_chosen_format(tmp_path):
    # Given a model that never ran (weight formats need no example input)
    widget = ModelSaveWidget("net", namespace={"net": models.mlp()}, dest=f"{tmp_path}/")
    assert widget.format_picker.value == "onnx"
    assert "safetensors" in widget.format_picker.options
    # When another registered format is chosen, staged and written
    widget.format_picker.value = "safetensors"
    staged = widget.stage()
    path = widget.write()
    # Then the artifact is in that format and the code names it
    assert staged.format == "safetensors" and path.suffix == ".safetensors"
    assert widget.code_text() == f"jms.export(net, '{tmp_path}/', format='safetensors')"


def test_a_model_never_called_stages_with_the_guessed_example_without_typing():
    # Given a model that was never called
    widget = ModelSaveWidget("cnn", namespace={"cnn": models.SmallCNN().eval()})
    # Then its first layer's example is offered, editable, with one axis row per dimension
    assert widget.input_expr.value == "torch.randn(1, 3, 224, 224)"
    assert "guessed from its first layer, Conv2d" in widget.input_info.value
    assert [(t, d) for t, d, _, _ in widget.axes] == [("image", d) for d in range(4)]
    # When Stage is pressed as it is
    staged = widget.stage()
    # Then it stages on that example (the namespace does not even import torch)
    assert widget.state == "staged" and staged.input_specs[0].shape == (1, 3, 224, 224)
    assert "parity passed" in widget.report.value and "KB" in widget.summary.value
    widget.discard()


def test_the_form_switches_to_the_last_call_when_one_is_recorded():
    from jupyter_modelsave.core import discovery

    net = models.mlp()
    widget = ModelSaveWidget("net", namespace={"net": net})
    assert discovery.is_recording()  # the widget starts the recorder
    assert widget.input_expr.value == "torch.randn(1, 8)"
    # When the user runs the model in a cell (the widget hears about it after the cell)
    net(torch.randn(5, 8))
    widget._on_cell_ran()
    # Then the guess gives way to the recorded call
    assert widget.input_expr.value == ""
    assert "input [5, 8] float32" in widget.input_info.value
    assert [(t, d) for t, d, _, _ in widget.axes] == [("input", 0), ("input", 1)]


def test_an_expression_the_user_typed_is_never_replaced():
    net = models.mlp()
    widget = ModelSaveWidget("net", namespace={"net": net})
    widget.input_expr.value = "torch.ones(2, 8)"
    net(torch.randn(5, 8))
    widget._on_cell_ran()
    assert widget.input_expr.value == "torch.ones(2, 8)"


def test_a_weight_format_does_not_run_the_model_on_a_guess(tmp_path):
    widget = ModelSaveWidget("net", namespace={"net": models.mlp()}, dest=f"{tmp_path}/")
    widget.format_picker.value = "safetensors"
    staged = widget.stage()
    assert staged.input_specs == [] and widget.code_text().count("torch.randn") == 0
    widget.discard()


def test_errors_and_verdicts_keep_the_themes_text_colour():
    # Issue 16.5: colour is a border; a fixed text colour is unreadable in one of the themes
    widget = ModelSaveWidget("b", namespace={"b": models.DataDependentBranch()})
    widget.input_expr.value = "torch.randn(2, 4) + 5"
    widget.stage()
    assert "FAILED" in widget.report.value
    widget.input_expr.value = "nonsense("
    for html_text in (widget.report.value, widget.error_box.value):
        assert "border-left: 4px solid var(--jp-" in html_text.replace(
            "border-left:4px", "border-left: 4px"
        )
        assert ";color:" not in html_text.replace(" ", "") and 'style="color' not in html_text
    widget.discard()


def test_the_options_shown_follow_the_formats_capabilities():
    # Given the widget on a PyTorch model
    widget = ModelSaveWidget("net", namespace={"net": models.mlp()})
    shown = lambda box: box.layout.display != "none"  # noqa: E731
    # Then ONNX shows opsets and dynamic axes; the other graph formats dynamic axes only;
    # the weight formats neither
    for fmt, opset, axes in [("onnx", True, True), ("torchscript", False, True),
                             ("torch_export", False, True), ("safetensors", False, False)]:  # fmt: skip
        widget.format_picker.value = fmt
        assert (shown(widget.opset_picker), shown(widget.axes_box)) == (opset, axes), fmt
    # And what a format does not take is not passed to stage (a ticked axis stays ticked)
    widget.format_picker.value = "onnx"
    widget.mark_dynamic("input", 0)
    assert widget.options()["dynamic_axes"] == {"input": {0: "batch"}}
    widget.format_picker.value = "safetensors"
    assert widget.options() == {"format": "safetensors"}


def test_the_precision_picker_follows_the_format_and_the_review_shows_the_release_check(
    namespace, tmp_path
):
    widget = ModelSaveWidget("cnn", namespace=namespace, dest=f"{tmp_path}/")
    # the precisions this machine takes for the format, after the model's own
    assert [v for _, v in widget.precision_picker.options] == [
        None, *(p for p in jms.precisions("onnx") if p != "fp32")
    ]  # fmt: skip
    widget.format_picker.value = "safetensors"
    assert [v for _, v in widget.precision_picker.options] == [None, "fp16", "bf16"]
    widget.format_picker.value = "torchscript"
    assert [v for _, v in widget.precision_picker.options] == [None]
    widget.format_picker.value = "onnx"
    widget.stage()
    first = widget.write()
    # When the fp16 variant is staged into the same folder
    widget.precision_picker.value = "fp16"
    staged = widget.stage()
    assert staged.precision == "fp16" and "precision='fp16'" in widget.code_text()
    # Then the review shows precision, size, latency and the diff with its warnings
    release = widget.release.value
    assert "fp16 from fp32" in release and "x the fp32 artifact" in release
    assert "latency" in release and "eager p50" in release
    assert "version 1.0.0" in release and "precision changed since version 1.0.0" in release
    assert widget.diff()["previous_path"] == str(first)
    # and another destination without that name shows no diff
    widget.dest.value = f"{tmp_path}/elsewhere/"
    assert widget.diff() is None and "previous" not in widget.release.value
