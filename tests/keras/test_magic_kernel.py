"""``%modelsave`` on a Keras model in a real kernel (nbclient): listing, ONNX and SavedModel."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

from .._notebook import html, run_cells, text

pytestmark = pytest.mark.slow

CELLS = [
    "import os\nos.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n%load_ext jupyter_modelsave\n"
    "import logging\nlogging.getLogger('tensorflow').setLevel(logging.INFO)",
    "import numpy as np, keras\nkeras.utils.set_random_seed(0)\n"
    "cnn = keras.Sequential([keras.Input((8, 8, 3), name='image'), keras.layers.Conv2D(4, 3),\n"
    "    keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)])\n"
    "x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype('float32')",
    "%modelsave",
    "%modelsave cnn exports/ --input x --dynamic image:0=batch",
    "%modelsave cnn exports/ --format savedmodel",
    "%modelsave cnn exports/ --format safetensors",
    "%modelsave cnn declared/",  # no --input: the declared shape, None kept dynamic
]
ERROR_CELLS = (5,)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras_magic")
    return folder, run_cells(folder, CELLS, ERROR_CELLS)


def test_listing_shows_the_keras_model(executed):
    _, cells = executed
    table = html(cells[2])
    assert "<td>cnn</td><td>Sequential</td>" in table
    assert "declared (None as 2): image: [2, 8, 8, 3] float32" in table
    assert "<td>keras</td><td>onnx, savedmodel, keras, weights</td>" in table


def test_onnx_and_savedmodel_are_written_with_parity_and_code(executed):
    folder, cells = executed
    (onnx_path,) = (folder / "exports").glob("cnn_v*.onnx")
    (saved,) = (folder / "exports").glob("cnn_v*.savedmodel")
    assert saved.is_dir() and (saved / "saved_model.pb").is_file()
    manifest = json.loads(onnx_path.with_name(onnx_path.name + ".json").read_text())
    assert manifest["framework"] == "keras"
    assert manifest["dynamic_axes"] == {"image": {"0": "batch"}}
    assert "parity passed" in html(cells[3]) and "parity passed" in html(cells[4])
    assert (
        text(cells[3])
        .rstrip()
        .endswith(
            "Equivalent code: jms.export(cnn, 'exports/', x, dynamic_axes={'image': {0: 'batch'}})"
        )
    )
    assert "format='savedmodel'" in text(cells[4])


def test_without_input_the_declared_none_dims_stay_dynamic(executed):
    import onnx

    folder, cells = executed
    (path,) = (folder / "declared").glob("cnn_v*.onnx")
    manifest = json.loads(path.with_name(path.name + ".json").read_text())
    assert manifest["dynamic_axes"] == {"image": {"0": "batch"}}
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 8, 8, 3]
    assert "parity passed on 7 probes" in html(cells[6])


def test_tensorflow_logs_stay_out_of_the_cells(executed):
    _, cells = executed
    assert not any("Assets written" in text(cell) for cell in cells)


def test_a_torch_format_on_a_keras_model_is_one_line(executed):
    _, cells = executed
    (error,) = [o for o in cells[5].outputs if o.output_type == "error"]
    assert error.ename == "InvalidOptionError" and len(error.traceback) == 1
    assert "does not apply to Keras models" in error.traceback[0]
