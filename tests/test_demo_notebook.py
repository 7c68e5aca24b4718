"""The demo notebook runs top to bottom in a real kernel and writes checked artifacts."""

import json
import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

DEMO = Path(__file__).parent.parent / "examples" / "demo.ipynb"


def test_demo_notebook_runs_and_writes_two_artifacts(tmp_path):
    shutil.copy(DEMO, tmp_path / "demo.ipynb")
    nb = nbformat.read(tmp_path / "demo.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    written = sorted((tmp_path / "exports").glob("*.onnx"))
    assert [p.name.split("_v")[0] for p in written] == ["cnn", "transformer"]
    for path in written:
        manifest = json.loads(Path(f"{path}.json").read_text())
        assert manifest["parity"]["passed"] is True
    # the first cell loads the extension, so calls made before any listing are known
    assert nb.cells[1].source == "%load_ext jupyter_modelsave"
    listing = nb.cells[5].outputs[0]["data"]["text/plain"]
    assert "('cnn', [(2, 3, 32, 32)])" in listing and "('mlp', [(4, 20)])" in listing
