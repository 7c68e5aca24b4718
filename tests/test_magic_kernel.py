"""``%modelsave`` in a real kernel (nbclient): exports, the parity table, bad arguments."""

import json

import pytest

from ._notebook import html, run_cells, text

pytestmark = pytest.mark.slow

CELLS = [
    "%load_ext jupyter_modelsave",
    "import torch\nfrom torch import nn\n\ntorch.manual_seed(0)\n"
    "net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))",
    "%modelsave",
    "net(torch.randn(3, 8)).shape",
    "%modelsave net exports/",
    "%modelsave net exports/ --dynamic input:0=batch",
    "%modelsave net exports/ --opset eighteen",
    "%modelsave net exports/ --opset 999",
    "print('alive', 1 + 1)",
]
ERROR_CELLS = (6, 7)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("magic")
    return folder, run_cells(folder, CELLS, ERROR_CELLS)


def test_listing_shows_the_model_table(executed):
    _, cells = executed
    table = html(cells[2])
    assert "<td>net</td><td>Sequential</td><td>212</td>" in table  # 8*16+16 + 16*4+4
    assert "none yet: run the model once" in table


def test_exports_write_artifacts_with_manifests_and_show_the_parity_table(executed):
    folder, cells = executed
    artifacts = sorted((folder / "exports").glob("*.onnx"))
    assert [a.name[: len("net_v1.0.0")] for a in artifacts] == ["net_v1.0.0", "net_v1.0.1"]
    static, dynamic = (json.loads(a.with_name(a.name + ".json").read_text()) for a in artifacts)
    assert static["dynamic_axes"] == {} and dynamic["dynamic_axes"] == {"input": {"0": "batch"}}
    assert [p["name"] for p in dynamic["parity"]["probes"]][-1] == "batch=2"
    for cell, manifest, call in (
        (cells[4], static, "jms.export(net, 'exports/')"),
        (cells[5], dynamic, "jms.export(net, 'exports/', dynamic_axes={'input': {0: 'batch'}})"),
    ):
        assert 'class="jms-parity"' in html(cell) and "parity passed" in html(cell)
        printed = text(cell)
        assert f"sha256 {manifest['sha256']}" in printed
        assert printed.rstrip().endswith(f"Equivalent code: {call}")
        views = [
            o
            for o in cell.outputs
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
        ]
        assert len(views) == 1  # the progress bar


def test_bad_arguments_give_a_usage_message_and_core_errors_one_line(executed):
    _, cells = executed
    usage = text(cells[6])
    assert "UsageError: argument --opset: invalid int value: 'eighteen'" in usage
    assert "usage: %modelsave [--format FORMAT]" in usage
    assert all(o.output_type == "stream" for o in cells[6].outputs)  # no traceback
    (error,) = [o for o in cells[7].outputs if o.output_type == "error"]
    assert error.ename == "InvalidOptionError"
    assert len(error.traceback) == 1
    assert error.traceback[0].startswith("InvalidOptionError: opset=999 is not supported here")


def test_the_kernel_is_alive_after_the_errors(executed):
    _, cells = executed
    assert text(cells[8]) == "alive 2\n"
