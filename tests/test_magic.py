"""``%modelsave``: argument parsing, the model table, and exports in an IPython shell."""

import argparse
import json

import pytest
import torch
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic_arguments import parse_argstring

import jupyter_modelsave as jms
from jupyter_modelsave.magics import ModelSaveMagics, dynamic_spec, stage_options

from . import models


def _args(line: str) -> argparse.Namespace:
    return parse_argstring(ModelSaveMagics.modelsave, line)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("input:0=batch", ("input", {0: "batch"})),
        ("tokens:0=batch,1=seq", ("tokens", {0: "batch", 1: "seq"})),
        (" x : -1 = width ", ("x", {-1: "width"})),
    ],
)
def test_dynamic_specs_parse(text, parsed):
    assert dynamic_spec(text) == parsed


@pytest.mark.parametrize(
    "text", ["input", "input:", "input:0", "input:batch=0", ":0=batch", "a:0="]
)
def test_malformed_dynamic_specs_are_refused_with_the_syntax(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"INPUT:DIM=NAME\[,DIM=NAME...\]"):
        dynamic_spec(text)


def test_options_keep_only_what_the_line_names():
    args = _args(
        "net out/ --format onnx --opset 18 --dynamic left:0=batch --dynamic right:0=batch,1=n "
        "--atol 1e-3 --no-parity --name clf --version 2.0.0 --overwrite"
    )
    assert stage_options(args) == {
        "format": "onnx",
        "opset": 18,
        "atol": 1e-3,
        "name": "clf",
        "dynamic_axes": {"left": {0: "batch"}, "right": {0: "batch", 1: "n"}},
        "parity": False,
    }
    assert (args.model, args.dest, args.version, args.overwrite) == ("net", "out/", "2.0.0", True)
    assert stage_options(_args("net out/")) == {}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("net out/ --opset eighteen", "argument --opset: invalid int value: 'eighteen'"),
        ("net out/ --dynamic input", "argument --dynamic: 'input' is not INPUT:DIM=NAME"),
        ("net out/ --colour red", "unrecognized arguments: --colour red"),
        ("net 'out/", "No closing quotation"),
    ],
)
def test_bad_arguments_give_a_usage_message(shell, line, message):
    with pytest.raises(UsageError) as err:
        shell.run_line_magic("modelsave", line)
    assert message in str(err.value)
    assert "\nusage: %modelsave [--format FORMAT] [--opset OPSET] [--dynamic" in str(err.value)


@pytest.fixture
def shell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_modelsave")
    jms.load_ipython_extension(ip)  # what %load_ext does, also when the shell had it loaded
    before = set(ip.user_ns)
    ip.user_ns["torch"] = torch
    yield ip
    for name in set(ip.user_ns) - before:
        del ip.user_ns[name]


def test_without_arguments_it_shows_a_table_of_the_namespace_models(shell, monkeypatch):
    shown = []
    monkeypatch.setattr("jupyter_modelsave.magics.display", shown.append)
    shell.user_ns["cnn"] = models.SmallCNN()
    shell.run_line_magic("modelsave", "")  # lists and starts recording inputs
    shell.user_ns["cnn"](torch.randn(2, 3, 16, 16))
    shell.run_line_magic("modelsave", "")
    table = shown[-1].data
    assert "<th>last input</th>" in table
    # 3*8*9+8 conv, 8+8 batch norm, 8*10+10 linear parameters; plus 2*8 float and 1 int64 buffers
    row = table.split("<td>cnn</td>")[1].split("</tr>")[0]
    assert "<td>SmallCNN</td><td>330</td><td>1.4 KB</td><td>cpu</td><td>float32</td>" in row
    assert "image: [2, 3, 16, 16] float32" in row
    assert "none yet: run the model once" in shown[0].data


def test_it_stages_reports_and_writes_then_prints_the_equivalent_call(shell, tmp_path, capsys):
    torch.manual_seed(0)
    shell.user_ns["net"] = models.mlp()
    shell.user_ns["example"] = torch.randn(3, 8)
    # When a model is exported with a dynamic batch dimension
    shell.run_line_magic(
        "modelsave", "net exports/ --input example --dynamic input:0=batch --atol 1e-3"
    )
    # Then the progress, the path, the sha256 and the equivalent call are printed
    out = capsys.readouterr().out.splitlines()
    assert "export 10%" in out and "done 100%" in out
    (artifact,) = (tmp_path / "exports").glob("net_v1.0.0_*.onnx")
    manifest = json.loads((tmp_path / "exports" / f"{artifact.name}.json").read_text())
    assert out[-3:] == [
        f"Wrote {artifact.relative_to(tmp_path)}",
        f"sha256 {manifest['sha256']}",
        "Equivalent code: jms.export(net, 'exports/', example, atol=0.001, "
        "dynamic_axes={'input': {0: 'batch'}})",
    ]
    assert manifest["dynamic_axes"] == {"input": {"0": "batch"}}
    assert manifest["parity"]["passed"] and manifest["parity"]["atol"] == 1e-3
    # And running the printed call writes the same artifact
    code = out[-1].removeprefix("Equivalent code: ").replace("exports/", "again/")
    path = eval(code, {**shell.user_ns, "jms": jms})
    assert path.name == artifact.name


def test_a_parity_failure_shows_the_report_and_writes_nothing(shell, tmp_path, capsys):
    shell.user_ns["broken"] = models.DataDependentBranch()
    shell.user_ns["x"] = torch.rand(2, 4) + 2  # takes the `x.min() > 1` branch
    result = shell.run_cell("%modelsave broken out/ --input x")
    out = capsys.readouterr().out
    # Then the error is one line, not a traceback, and the cell failed
    assert isinstance(result.error_in_exec, jms.ParityError)
    assert "ParityError: Not written: parity FAILED on 6 probes" in out
    assert "Traceback" not in out and "File " not in out
    assert not (tmp_path / "out").exists()
    # And with --allow-mismatch it is written anyway
    shell.run_line_magic("modelsave", "broken out/ --input x --allow-mismatch")
    assert len(list((tmp_path / "out").glob("broken_v1.0.0_*.onnx"))) == 1


@pytest.mark.parametrize("opset", [11, 12])
def test_the_opset_in_the_printed_call_is_the_opset_written(shell, tmp_path, capsys, opset):
    import onnx

    shell.user_ns["net"] = models.mlp()
    shell.run_line_magic("modelsave", f"net exports/ --input torch.randn(2,8) --opset {opset}")
    out = capsys.readouterr().out.splitlines()
    (artifact,) = (tmp_path / "exports").glob("net_v1.0.0_*.onnx")
    manifest = json.loads((tmp_path / "exports" / f"{artifact.name}.json").read_text())
    written = [o.version for o in onnx.load(str(artifact)).opset_import if o.domain == ""]
    assert written == [opset] and manifest["opset"] == opset
    assert (
        out[-1] == f"Equivalent code: jms.export(net, 'exports/', torch.randn(2,8), opset={opset})"
    )


def test_core_errors_are_one_line_and_usage_errors_name_the_fix(shell, capsys):
    shell.user_ns["net"] = models.mlp()
    result = shell.run_cell("%modelsave net out/ --input torch.randn(1,8) --opset 999")
    out = capsys.readouterr().out.strip()
    assert isinstance(result.error_in_exec, jms.InvalidOptionError)
    assert out.splitlines()[-1].startswith("InvalidOptionError: opset=999 is not supported here")
    with pytest.raises(UsageError, match=r"MODEL 'nett' could not be evaluated: NameError.*lists"):
        shell.run_line_magic("modelsave", "nett out/")
    with pytest.raises(UsageError, match="DEST is missing"):
        shell.run_line_magic("modelsave", "net")


@pytest.mark.parametrize(
    ("line", "refused"),
    [
        ("--format safetensors --opset 17", "--opset"),
        ("--format state_dict --dynamic x:0=b", "--dynamic"),
    ],
)
def test_options_a_format_does_not_take_are_refused_as_its_capabilities_say(
    shell, tmp_path, line, refused
):
    # As the sidebar and the widget offer only what a format takes (core.formats.describe)
    shell.user_ns["net"] = models.mlp()
    with pytest.raises(UsageError, match=rf"format '\w+' takes no {refused} \("):
        shell.run_line_magic("modelsave", f"net out/ {line}")
    assert not (tmp_path / "out").exists()


def test_a_model_called_after_load_ext_exports_without_an_input(shell, tmp_path, capsys):
    # Given %load_ext (the fixture) and a model defined and called in one cell, never listed
    shell.run_cell("net = torch.nn.Sequential(torch.nn.Linear(8, 3))\nnet(torch.randn(6, 8))")
    # When it is exported with no --input
    shell.run_line_magic("modelsave", "net exports/")
    # Then the recorded call was the example
    (artifact,) = (tmp_path / "exports").glob("net_v1.0.0_*.onnx")
    manifest = json.loads((tmp_path / "exports" / f"{artifact.name}.json").read_text())
    assert [i["shape"] for i in manifest["inputs"]] == [[6, 8]]


def test_without_any_call_the_error_suggests_the_guessed_input(shell, tmp_path):
    shell.user_ns["net"] = models.SmallCNN()
    with pytest.raises(jms.MissingInputError) as err:
        shell.run_line_magic("modelsave", "net exports/")
    assert '--input "torch.randn(1, 3, 224, 224)" (from its first layer, Conv2d)' in str(err.value)
    assert not (tmp_path / "exports").exists()


def test_the_table_offers_the_guess_for_a_model_never_called(shell, monkeypatch):
    shown = []
    monkeypatch.setattr("jupyter_modelsave.magics.display", shown.append)
    shell.user_ns["mlp"] = models.mlp()
    shell.run_line_magic("modelsave", "")
    assert "none yet: run the model once, or --input &#x27;torch.randn(1, 8)&#x27;" in shown[0].data


def test_precision_calibration_and_latency_flags_reach_stage():
    args = _args("net out/ --precision int8 --calibrate --no-latency")
    assert stage_options(args) == {"precision": "int8", "calibration": True, "latency": False}


def test_an_fp16_export_prints_precision_size_latency_and_the_diff(shell, tmp_path, capsys):
    torch.manual_seed(0)
    shell.user_ns["net"] = models.SmallCNN()
    shell.user_ns["example"] = torch.randn(4, 3, 16, 16)
    shell.run_line_magic("modelsave", "net exports/ --input example")
    capsys.readouterr()
    shell.run_line_magic("modelsave", "net exports/ --input example --precision fp16")
    out = capsys.readouterr().out.splitlines()
    (artifact,) = (tmp_path / "exports").glob("net_v1.0.1_*.onnx")
    manifest = json.loads((tmp_path / "exports" / f"{artifact.name}.json").read_text())
    assert manifest["precision"] == "fp16" and manifest["previous"]["version"] == "1.0.0"
    assert any(line.startswith("precision: fp16 from fp32: onnxruntime float16") for line in out)
    assert any(line.startswith("latency: p50 ") and "eager p50" in line for line in out)
    assert any(line.startswith("previous: version 1.0.0") for line in out)
    assert "warning: precision changed since version 1.0.0: 'fp32' -> 'fp16'" in "\n".join(out)
    assert out[-1].endswith("precision='fp16')")


def test_an_unknown_precision_is_one_line_naming_the_precisions(shell):
    shell.user_ns["net"] = models.mlp()
    result = shell.run_cell("%modelsave net out/ --input torch.randn(1,8) --precision fp8")
    assert isinstance(result.error_in_exec, jms.InvalidOptionError)
    assert "fp32, fp16, bf16, int8" in str(result.error_in_exec)
