"""The sidebar's kernel side, called directly with a namespace (no kernel, no Comm)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

import jupyter_modelsave as jms
from jupyter_modelsave import kernel as jk
from jupyter_modelsave.core.errors import InvalidOptionError, ParityError
from jupyter_modelsave.core.formats.onnx import OnnxFormat

from . import models


@pytest.fixture
def side(tmp_path: Path) -> jk.ModelSaveKernel:
    root = tmp_path / "root"
    root.mkdir()
    namespace = {
        "net": models.SmallCNN(),
        "mlp": models.mlp(),
        "branchy": models.DataDependentBranch(),
    }
    side = jk.ModelSaveKernel(namespace, tmp_path / "staging", root)
    yield side
    side.discard_all()


def called(side: jk.ModelSaveKernel, name: str, *inputs: torch.Tensor) -> None:
    """List the models (which starts recording their inputs), then call one."""
    side.models({})
    side.namespace[name](*inputs)


def test_models_lists_the_namespace_and_their_last_inputs(side: jk.ModelSaveKernel) -> None:
    # Given models in the namespace, listed once (which starts recording their inputs)
    side.models({})
    # When one of them runs and the list is asked for again
    side.namespace["net"](torch.randn(2, 3, 8, 8))
    listed = {m["name"]: m for m in side.models({})["models"]}
    # Then every model is listed, with the shapes of its last call
    assert set(listed) == {"net", "mlp", "branchy"}
    assert listed["net"]["class_name"] == "SmallCNN"
    assert listed["net"]["last_input"][0]["shape"] == [2, 3, 8, 8]
    assert listed["mlp"]["last_input"] is None
    json.dumps(listed)  # the reply travels as JSON


def test_options_offer_formats_and_opset_ranges(side: jk.ModelSaveKernel) -> None:
    options = side.options({})
    torch_formats = options["frameworks"]["torch"]["formats"]
    assert list(torch_formats) == jms.formats()
    low, high = torch_formats["onnx"]["opsets"]["auto"]
    assert 7 <= low < 18 <= high
    assert torch_formats["onnx"]["exporters"] == ["auto", "dynamo", "torchscript"]
    assert (
        torch_formats["safetensors"]["opsets"] == {}
        and not torch_formats["safetensors"]["needs_inputs"]
    )
    assert options["tolerances"]["float32"] == [1e-4, 1e-3]


def test_a_guessed_example_is_not_run_for_a_format_that_needs_no_inputs(
    side: jk.ModelSaveKernel,
) -> None:
    # Given a model never called, and the example guessed from its first layer (as the sidebar
    # fills it in)
    side.namespace["fresh"] = models.SmallCNN()
    (info,) = [m for m in side.models({})["models"] if m["name"] == "fresh"]
    guess = info["guessed_expression"]
    # When it is sent with a weights format, then the model is saved without running it
    staged = side.staged[
        side.stage({"model": "fresh", "format": "safetensors", "example": guess})["id"]
    ]
    assert staged.input_specs == [] and staged.report.passed
    # And with a graph format the guess is the example
    staged = side.staged[
        side.stage({"model": "fresh", "format": "torchscript", "example": guess})["id"]
    ]
    assert [s.shape for s in staged.input_specs] == [(1, 3, 224, 224)]


def test_only_the_imported_frameworks_are_described() -> None:
    # Describing a framework imports it: a kernel that only has torch describes only torch
    code = (
        "import sys, torch; from jupyter_modelsave.service import ModelSaveService;"
        "print(sorted(ModelSaveService({}).options()['frameworks']), 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['torch']", "False"]


def test_stage_publishes_the_artifact_for_the_server(side: jk.ModelSaveKernel) -> None:
    # Given an MLP and an expression for its example input
    steps: list[str] = []
    side.namespace["torch"] = torch
    # When it is staged with a dynamic batch axis and an opset
    result = side.stage(
        {
            "model": "mlp",
            "example": "torch.randn(3, 8)",
            "opset": 18,
            "dynamic_axes": {"input": {"0": "batch"}},
        },
        lambda step, fraction: steps.append(step),
    )
    # Then the parity passed, the progress was reported, and the folder the server serves holds
    # the artifact (same bytes as the core's) and an index naming it
    assert result["report"]["passed"] is True
    assert result["opset"] == 18
    assert steps[0] == "prepare" and steps[-1] == "done"
    folder = side.staging_dir / result["id"]
    index = json.loads((folder / "index.json").read_text())
    assert index["artifact"] == result["file"] == "mlp.onnx"
    assert index["graph"] == "mlp.onnx"
    staged = side.staged[result["id"]]
    assert (folder / "mlp.onnx").read_bytes() == staged.path.read_bytes()
    assert index["sha256"] == staged.sha256 == result["sha256"]
    graph = onnx.load(str(folder / "mlp.onnx"))
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_a_bad_example_expression_is_refused_with_the_reason(side: jk.ModelSaveKernel) -> None:
    with pytest.raises(InvalidOptionError, match="NameError"):
        side.stage({"model": "mlp", "example": "undefined_name + 1"})


def test_write_goes_below_the_root_and_discard_removes_everything(
    side: jk.ModelSaveKernel,
) -> None:
    # Given a staged export
    called(side, "mlp", torch.randn(2, 8))
    result = side.stage({"model": "mlp"})
    sid = result["id"]
    # When it is written into a sub-folder of the root
    written = side.write({"id": sid, "folder": "exports", "version": "2.0.0"})
    # Then the path is relative to the root and the file and its manifest are there
    assert written["path"].startswith("exports/mlp_v2.0.0_")
    assert (side.root_dir / written["path"]).is_file()
    assert (side.root_dir / written["manifest"]).is_file()
    # When it is discarded, the staged files are gone from both places
    staged = side.staged[sid]
    assert side.discard({"id": sid}) == {"discarded": True}
    assert not (side.staging_dir / sid).exists()
    assert not staged.path.exists()
    with pytest.raises(InvalidOptionError, match="stage it again"):
        side.write({"id": sid, "folder": "exports"})


@pytest.mark.parametrize("folder", ["..", "../elsewhere", "/tmp", "a/../../b"])
def test_write_refuses_folders_outside_the_root(side: jk.ModelSaveKernel, folder: str) -> None:
    called(side, "mlp", torch.randn(2, 8))
    sid = side.stage({"model": "mlp"})["id"]
    with pytest.raises(InvalidOptionError, match="Jupyter root"):
        side.write({"id": sid, "folder": folder})


def test_data_dependent_branch_fails_parity_and_says_why(side: jk.ModelSaveKernel) -> None:
    # Given a model with `if x.min() > 1:`, called on inputs that take the rare branch
    called(side, "branchy", torch.randn(2, 4) + 5)
    # When it is staged
    result = side.stage({"model": "branchy"})
    # Then the report fails, names the likely cause, and write refuses it unless allowed
    assert result["report"]["passed"] is False
    assert any("data-dependent branch" in d for d in result["report"]["diagnosis"])
    with pytest.raises(ParityError):
        side.write({"id": result["id"], "folder": "out"})
    written = side.write({"id": result["id"], "folder": "out", "allow_mismatch": True})
    assert (side.root_dir / written["path"]).is_file()


def test_respond_sends_progress_then_one_reply(side: jk.ModelSaveKernel) -> None:
    sent: list[dict] = []
    side.respond({"id": "r1", "op": "models", "args": {}}, sent.append)
    assert [m["event"] for m in sent] == ["reply"]
    assert sent[0]["id"] == "r1" and sent[0]["ok"] is True

    sent.clear()
    side.respond({"id": "r2", "op": "stage", "args": {"model": "nope"}}, sent.append)
    assert sent == [
        {
            "id": "r2",
            "event": "reply",
            "ok": False,
            "error": {
                "type": "InvalidOptionError",
                "message": "No variable named 'nope' in the kernel; run the cell that defines it.",
            },
        }
    ]


def test_respond_reports_an_interrupt_as_cancelled(side: jk.ModelSaveKernel) -> None:
    def interrupted(step: str, fraction: float) -> None:
        raise KeyboardInterrupt

    sent: list[dict] = []
    side.handle = lambda op, args, progress: interrupted("x", 0)  # type: ignore[method-assign]
    side.respond({"id": "r3", "op": "stage", "args": {}}, sent.append)
    assert sent[-1]["error"]["type"] == "Cancelled"


def test_the_graph_view_keeps_shapes_and_drops_data(
    side: jk.ModelSaveKernel, tmp_path: Path
) -> None:
    called(side, "net", torch.randn(1, 3, 8, 8))
    staged = side.staged[side.stage({"model": "net"})["id"]]
    target = tmp_path / "graph.onnx"
    target.write_bytes(OnnxFormat().graph_view(staged.path))
    full, stripped = onnx.load(str(staged.path)), onnx.load(str(target))
    assert target.stat().st_size < staged.path.stat().st_size
    assert [list(t.dims) for t in stripped.graph.initializer] == [
        list(t.dims) for t in full.graph.initializer
    ]
    assert all(not t.raw_data and not t.float_data for t in stripped.graph.initializer)
    assert len(stripped.graph.node) == len(full.graph.node)


def test_options_offer_the_precisions_this_machine_takes_per_format(
    side: jk.ModelSaveKernel,
) -> None:
    # (each format's capabilities carry them: jms.precisions, what the runtime runs of them)
    formats = side.options({})["frameworks"]["torch"]["formats"]
    precisions = {name: info["precisions"] for name, info in formats.items()}
    assert precisions["safetensors"] == ["fp32", "fp16", "bf16"]
    assert precisions["torchscript"] == ["fp32"]
    assert {"fp32", "fp16", "int8"} <= set(precisions["onnx"])
    assert precisions == {name: jms.precisions(name) for name in formats}


def test_stage_a_variant_then_diff_it_against_the_folder_before_writing(
    side: jk.ModelSaveKernel,
) -> None:
    called(side, "net", torch.randn(2, 3, 8, 8))
    first = side.stage({"model": "net", "latency": False})
    assert first["precision"] == "fp32" and first["latency"] is None
    side.write(
        {"id": first["id"], "folder": "exports", "overwrite": False, "allow_mismatch": False}
    )
    # When the fp16 variant is staged and compared with the folder
    staged = side.stage({"model": "net", "precision": "fp16"})
    assert staged["precision"] == "fp16" and staged["variant"]["from"] == "fp32"
    assert staged["latency"]["runs"] >= 1 and staged["report"]["precision"] == "fp16"
    diff = side.diff({"id": staged["id"], "folder": "exports"})["diff"]
    # Then the diff names the previous version by its root-relative path, with the warnings
    assert diff["previous_version"] == "1.0.0" and diff["previous_path"].startswith("exports/")
    assert diff["signature_changed"]["precision"] == {"before": "fp32", "after": "fp16"}
    assert any("precision changed" in w for w in diff["warnings"])
    json.dumps(diff, allow_nan=False)  # the reply travels as plain JSON
    assert side.diff({"id": staged["id"], "folder": "elsewhere"}) == {"diff": None}


@pytest.mark.parametrize(
    ("op", "args", "says"),
    [
        ("stage", {"model": "net", "precision": 16}, "'precision' must be a string"),
        ("stage", {"model": "net", "precision": "fp8"}, "is not one of fp32, fp16, bf16, int8"),
        ("stage", {"model": "net", "latency": "no"}, "'latency' must be true or false"),
        ("stage", {"model": "net", "latency": None}, "'latency' must be true or false"),
        ("diff", {"id": "nope", "folder": "exports"}, "stage it again"),
        ("diff", {"id": 3}, "'id' must be a string"),
        ("diff", {"folder": "x"}, "needs the field 'id'"),
    ],
)
def test_bad_precision_latency_and_diff_requests_are_refused(
    side: jk.ModelSaveKernel, op: str, args: dict, says: str
) -> None:
    called(side, "net", torch.randn(2, 3, 8, 8))
    reply = side.respond({"id": 1, "op": op, "args": args}, lambda message: None)
    assert reply["ok"] is False and says in reply["error"]["message"]


def test_diff_refuses_folders_outside_the_root(side: jk.ModelSaveKernel) -> None:
    called(side, "net", torch.randn(2, 3, 8, 8))
    staged = side.stage({"model": "net", "latency": False})
    for folder in ("../outside", "/etc"):
        with pytest.raises(InvalidOptionError):
            side.diff({"id": staged["id"], "folder": folder})
