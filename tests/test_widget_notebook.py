"""The widget tutorial runs in a real kernel, writes its artifact and renders with widget state."""

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter

pytestmark = pytest.mark.slow

TUTORIAL = Path(__file__).parent.parent / "examples" / "widget_tutorial.ipynb"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def test_tutorial_runs_writes_an_artifact_and_embeds_the_widget_state(tmp_path):
    shutil.copy(TUTORIAL, tmp_path / "tutorial.ipynb")
    nb = nbformat.read(tmp_path / "tutorial.ipynb", as_version=4)
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": tmp_path}},
        store_widget_state=True,
    ).execute()
    # Then one artifact with its manifest was written
    (artifact,) = (tmp_path / "exports").glob("cnn_v1.0.0_*.onnx")
    assert artifact.with_name(artifact.name + ".json").exists()
    outputs = {
        i: "".join(o.get("text", "") for o in c.get("outputs", [])) for i, c in enumerate(nb.cells)
    }
    assert "staged - parity passed" in outputs[5]
    assert f"written - exports/{artifact.name}" in outputs[6]
    assert "dynamic_axes={'input': {0: 'batch'}}" in outputs[8]
    assert "(2, 10)" in str(nb.cells[10].outputs[0]["data"]["text/plain"])
    # And the widget's final state is stored, so a rendered tutorial shows it
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    shown = [m["state"] for m in state.values() if m["model_name"] == "HTMLModel"]
    assert any(artifact.name in s.get("value", "") for s in shown)
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert WIDGET_STATE in html and artifact.name in html
