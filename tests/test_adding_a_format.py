"""Adding a format is one module and one registry line (README: "Adding a format"): the toy
``npz`` format of ``tests/toy_npz.py``, registered by that one line, is offered by every surface
(read from its capabilities) and staged, written and loaded like the built-in ones."""

from __future__ import annotations

import pytest
import torch

import jupyter_modelsave as jms
from jupyter_modelsave import kernel as jk
from jupyter_modelsave.core.formats import REGISTRY
from jupyter_modelsave.widgets import ModelSaveWidget

from . import models


@pytest.fixture
def npz(monkeypatch):
    # the one registry line of core/formats/__init__.py
    monkeypatch.setitem(REGISTRY, "npz", {"torch": "tests.toy_npz:NpzFormat"})


def test_a_registered_format_is_offered_by_the_core_the_kernel_side_and_the_widget(npz, tmp_path):
    # Given the toy format registered, and a model in a kernel's namespace
    side = jk.ModelSaveKernel({"mlp": models.mlp()}, tmp_path / "staging", tmp_path)
    # Then jms lists it, the kernel side describes its capabilities and offers it for the model
    assert "npz" in jms.formats() and "npz" not in jms.formats("keras")
    (listed,) = side.models({})["models"]
    assert "npz" in listed["formats"]
    described = side.options({})["frameworks"]["torch"]["formats"]["npz"]
    assert described["extension"] == ".npz" and described["kind"] == "weights"
    assert (described["needs_inputs"], described["dynamic_axes"], described["opsets"]) == (
        False,
        False,
        {},
    )
    # And the widget offers it, without the options it does not take
    widget = ModelSaveWidget("mlp", namespace=side.namespace)
    widget.format_picker.value = "npz"
    assert "npz" in widget.format_picker.options
    assert widget.opset_picker.layout.display == "none" and widget.axes_box.layout.display == "none"


def test_a_registered_format_is_staged_written_and_loaded(npz, tmp_path):
    # Given a model and the toy format
    model = models.mlp()
    # When it is staged (weights: no example input needed) and written
    staged = jms.stage(model, format="npz")
    path = staged.write(f"{tmp_path}/out/")
    # Then parity is the bitwise round trip, and the artifact has its versioned name and manifest
    assert staged.report.passed and staged.report.kind == "weights"
    assert path.name.startswith("model_v1.0.0_") and path.suffix == ".npz"
    assert path.with_name(f"{path.name}.json").is_file()
    # And it loads back (its sha256 checked) and into a fresh model
    loaded = jms.load(path)
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    fresh = models.mlp()
    jms.load_into(fresh, path)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), loaded.values()))


def test_the_sidebars_kernel_side_stages_it_without_a_graph(npz, tmp_path):
    side = jk.ModelSaveKernel({"mlp": models.mlp()}, tmp_path / "staging", tmp_path)
    reply = side.stage({"model": "mlp", "format": "npz", "opset": 17, "exporter": "dynamo"})
    assert reply["file"] == "mlp.npz" and reply["graph"] is None  # no graph view
    assert reply["format"] == "npz" and reply["report"]["passed"]
    side.discard({"id": reply["id"]})
