"""find_models lists Keras models and tf.Modules, once each, without importing a framework."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

import keras  # noqa: E402

import jupyter_modelsave as jms  # noqa: E402

from . import models  # noqa: E402


class Scale(tf.Module):
    """A plain tf.Module: ``y = x * w + b``."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(np.arange(1, 5, dtype="float32"))
        self.b = tf.Variable(np.float32(0.5))

    def __call__(self, x):
        return x * self.w + self.b


def test_lists_keras_models_and_tf_modules_with_framework_and_formats():
    cnn = models.cnn()
    two, _ = models.two_inputs()
    namespace = {"cnn": cnn, "two": two, "scale": Scale(), "layer": cnn.layers[0], "n": 3}
    found = {i.name: i for i in jms.find_models(namespace)}
    assert list(found) == ["cnn", "two", "scale"]  # the CNN's own layer is not a model
    assert (found["cnn"].framework, found["cnn"].formats) == (
        "keras", ["onnx", "savedmodel", "keras", "weights"],
    )  # fmt: skip
    assert found["scale"].framework == "tensorflow"
    assert found["scale"].formats == ["onnx", "savedmodel"]
    assert found["two"].class_name == "TwoInputs" and found["two"].last_input is None
    weights = sum(int(np.prod(w.shape)) for w in cnn.weights)
    assert found["cnn"].num_params == weights and found["cnn"].size_bytes == 4 * weights
    assert (found["cnn"].device, found["cnn"].dtype) == ("cpu", "float32")
    spec = found["cnn"].to_dict()["last_input"][0]
    assert spec == {"name": "image", "shape": [2, 8, 8, 3], "dtype": "float32", "device": "cpu"}
    assert found["scale"].num_params == 5


def test_a_model_nested_in_another_is_not_listed():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    outer = keras.Sequential([keras.Input((4,)), inner, keras.layers.Dense(2)])
    names = [i.name for i in jms.find_models({"outer": outer, "inner": inner})]
    assert names == ["outer"]


def test_tf_module_savedmodel_and_onnx_round_trip(tmp_path):
    module = Scale()
    x = models.array(3, 4)
    for fmt in ("savedmodel", "onnx"):
        staged = jms.stage(module, x, format=fmt, dynamic_axes={"input": {0: "n"}})
        assert staged.report.passed, staged.report.diagnosis
        loaded = jms.load(staged.write(tmp_path))
        x2 = models.array(6, 4, seed=4)
        got = loaded.serve(x2) if fmt == "savedmodel" else loaded.run(None, {"input": x2})[0]
        np.testing.assert_allclose(np.asarray(got), np.asarray(module(x2)), atol=1e-6)
    with pytest.raises(jms.InvalidOptionError, match=r"tf\.Module"):
        jms.stage(module, x, format="keras")


def _run(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
                          timeout=300, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_find_models_imports_no_framework_to_look():
    result = _run(
        "import json, sys\nimport jupyter_modelsave as jms\n"
        "found = jms.find_models({'x': 1})\n"
        "print(json.dumps({'found': len(found), 'imported': sorted(m for m in "
        "('torch', 'keras', 'tensorflow') if m in sys.modules)}))"
    )
    assert result == {"found": 0, "imported": []}


def test_find_models_with_torch_only_does_not_import_tensorflow():
    result = _run(
        "import json, sys, torch\nimport jupyter_modelsave as jms\n"
        "found = jms.find_models({'net': torch.nn.Linear(2, 2)})\n"
        "print(json.dumps({'fw': [i.framework for i in found], "
        "'tf': 'tensorflow' in sys.modules or 'keras' in sys.modules}))"
    )
    assert result == {"fw": ["torch"], "tf": False}


def test_keras_on_the_torch_backend_is_listed_once_as_keras():
    result = _run(
        "import json, keras, torch\nimport jupyter_modelsave as jms\n"
        "m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])\n"
        "assert isinstance(m, torch.nn.Module)\n"
        "found = jms.find_models({'m': m, 'dense': m.layers[0]})\n"
        "print(json.dumps([[i.name, i.framework, i.formats] for i in found]))",
        KERAS_BACKEND="torch",
    )
    assert result == [["m", "keras", ["keras", "weights"]]]


def test_without_tensorflow_loading_says_what_to_install(tmp_path):
    path = jms.export(Scale(), tmp_path, models.array(2, 4), format="savedmodel")
    result = _run(
        "import json, sys\nsys.modules['tensorflow'] = None  # as if not installed\n"
        "import jupyter_modelsave as jms\n"
        f"try:\n    jms.load({str(path)!r})\nexcept jms.MissingDependencyError as err:\n"
        "    print(json.dumps(str(err)))"
    )
    assert 'pip install "jupyter_modelsave[tensorflow]"' in result


class Blend(tf.Module):
    """``__call__(a, b)``: two positional tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(np.float32(0.25))

    def __call__(self, a, b):
        return {"mix": a * self.w + b, "diff": a - b}


def test_tf_module_takes_a_tuple_as_positional_arguments(tmp_path):
    module, pair = Blend(), (models.array(2, 3), models.array(2, 3, seed=1))
    staged = jms.stage(module, pair, format="savedmodel")
    assert staged.report.passed and [s.name for s in staged.output_specs] == ["diff", "mix"]
    loaded = jms.load(staged.write(tmp_path))
    np.testing.assert_allclose(np.asarray(loaded.serve(*pair)["mix"]), pair[0] * 0.25 + pair[1])
