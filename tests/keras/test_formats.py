"""Keras models through stage -> parity -> write -> load, in every Keras format."""

from __future__ import annotations

import json
import tempfile
import zipfile

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

import keras

import jupyter_modelsave as jms

from . import models

FORMATS = ["onnx", "savedmodel", "keras", "weights"]


@pytest.fixture(scope="module")
def cnn():
    model = models.cnn()
    return model, models.array(2, 8, 8, 3)


@pytest.fixture(scope="module")
def two():
    return models.two_inputs()


def _outputs(loaded, fmt: str, example):
    """Run what jms.load returned; None for weights (a dict of arrays)."""
    if fmt == "onnx":
        names = [i.name for i in loaded.get_inputs()]
        arrays = example if isinstance(example, list) else [example]
        outs = loaded.run(None, dict(zip(names, arrays)))
        return dict(zip([o.name for o in loaded.get_outputs()], outs))
    result = loaded.serve(example) if fmt == "savedmodel" else loaded(example)
    if isinstance(result, dict):
        return {k: np.asarray(v) for k, v in result.items()}
    return {"output": np.asarray(result)}


@pytest.mark.parametrize("fmt", FORMATS)
def test_cnn_every_format_round_trips_with_parity(tmp_path, cnn, fmt):
    # Given a Keras CNN and an example batch
    model, x = cnn
    # When it is staged, written and loaded back
    staged = jms.stage(model, x, format=fmt)
    assert staged.report.passed, staged.report.diagnosis
    path = staged.write(tmp_path)
    manifest = json.loads(path.with_name(path.name + ".json").read_text())
    loaded = jms.load(path)
    # Then the artifact is named by format, its manifest says keras, and it computes the same
    assert path.name.endswith({"onnx": ".onnx", "savedmodel": ".savedmodel", "keras": ".keras",
                               "weights": ".weights.h5"}[fmt])  # fmt: skip
    assert manifest["framework"] == "keras" and "keras" in manifest["versions"]
    assert manifest["format"] == fmt and manifest["sha256"] == staged.sha256
    if fmt == "weights":
        assert staged.report.kind == "weights"
        assert {tuple(a.shape) for a in loaded.values()} == {tuple(w.shape) for w in model.weights}
    else:
        got = _outputs(loaded, fmt, x)["output"]
        np.testing.assert_allclose(got, np.asarray(model(x, training=False)), atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
def test_subclassed_two_input_model_round_trips(tmp_path, two, fmt):
    model, example = two
    staged = jms.stage(model, example, format=fmt)
    assert staged.report.passed, staged.report.diagnosis
    if fmt in ("onnx", "savedmodel"):
        assert [s.name for s in staged.input_specs] == ["input_0", "input_1"]
        assert [s.name for s in staged.output_specs] == ["embedding", "logits"]
    loaded = jms.load(staged.write(tmp_path))
    live = {k: np.asarray(v) for k, v in model(example, training=False).items()}
    if fmt == "weights":
        assert len(loaded) == len(model.weights)
        return
    got = _outputs(loaded, fmt, example)
    for key in ("logits", "embedding"):
        np.testing.assert_allclose(got[key], live[key], atol=1e-5)


def test_onnx_dynamic_batch_axis_is_named_and_runs_other_batch_sizes(tmp_path, cnn):
    # Given a CNN staged with a dynamic batch axis and an opset
    model, x = cnn
    staged = jms.stage(model, x, dynamic_axes={"image": {0: "batch"}}, opset=17)
    # Then parity ran a probe with another batch size, and the graph names the axis
    assert [p.name for p in staged.report.probes][-1] == "batch=1"
    assert staged.opset == 17
    session = jms.load(staged.write(tmp_path))
    (graph_input,) = session.get_inputs()
    assert graph_input.name == "image" and graph_input.shape[0] == "batch"
    # When the artifact runs a batch of 5
    x5 = models.array(5, 8, 8, 3, seed=9)
    (out,) = session.run(None, {"image": x5})
    np.testing.assert_allclose(out, np.asarray(model(x5, training=False)), atol=1e-5)


def test_onnx_without_dynamic_axes_is_static(cnn):
    model, x = cnn
    staged = jms.stage(model, x)
    import onnx

    dims = onnx.load(str(staged.path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 8, 8, 3]
    meta = {p.key: p.value for p in onnx.load(str(staged.path)).metadata_props}
    assert meta["framework"] == "keras" and json.loads(meta["outputs"]) == ["output"]


def test_savedmodel_with_dynamic_batch_serves_another_batch(tmp_path, two):
    model, example = two
    staged = jms.stage(model, example, format="savedmodel",
                       dynamic_axes={"input_0": {0: "batch"}, "input_1": {0: "batch"}})  # fmt: skip
    assert staged.report.passed and len(staged.report.probes) == 7
    loaded = jms.load(staged.write(tmp_path))
    other = [models.array(7, 6, seed=5), models.array(7, 5, seed=6)]
    got = loaded.serve(other)
    np.testing.assert_allclose(
        np.asarray(got["logits"]), np.asarray(model(other)["logits"]), atol=1e-5
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_base64_round_trip(cnn, fmt):
    model, x = cnn
    text = jms.to_base64(model, format=fmt, example_inputs=x)
    assert text.startswith(f"jms1:{fmt}:{'zip' if fmt == 'savedmodel' else 'file'}:")
    loaded = jms.from_base64(text)
    if fmt != "weights":
        got = _outputs(loaded, fmt, x)["output"]
        np.testing.assert_allclose(got, np.asarray(model(x, training=False)), atol=1e-5)


@pytest.mark.parametrize("fmt", ["keras", "savedmodel"])
def test_tampered_artifact_is_refused(tmp_path, cnn, fmt):
    model, x = cnn
    path = jms.export(model, tmp_path, x, format=fmt)
    target = path / "jupyter_modelsave.json" if path.is_dir() else path
    with open(target, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(jms.IntegrityError, match="does not match its manifest"):
        jms.load(path)


def test_lambda_layer_archive_needs_trusted_unless_it_is_your_own(tmp_path):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2.0)])
    path = jms.export(model, tmp_path, format="keras")
    assert isinstance(jms.load(path), keras.Model)  # signed with this user's key: their code
    stranger = tmp_path / "received.keras"  # the same bytes from someone else: no signature
    stranger.write_bytes(path.read_bytes())
    with pytest.raises(jms.UnsafeArtifactError, match="trusted=True"):
        jms.load(stranger)
    assert isinstance(jms.load(stranger, trusted=True), keras.Model)


def test_weights_round_trip_leaves_the_live_weights_exactly_as_they_were(cnn):
    model, _ = cnn
    before = [np.array(w) for w in model.weights]
    staged = jms.stage(model, format="weights")
    assert staged.report.passed and staged.input_specs == []
    assert all(np.array_equal(a, np.array(w)) for a, w in zip(before, model.weights))
    note = zipfile.is_zipfile(staged.path)
    assert not note  # an HDF5 file, not a zip


def test_keras_archive_embeds_the_note(cnn):
    model, _ = cnn
    staged = jms.stage(model, format="keras", metadata={"labels": ["a", "b"]})
    with zipfile.ZipFile(staged.path) as archive:
        note = json.loads(archive.read("jupyter_modelsave.json"))
    assert note["metadata"] == {"labels": ["a", "b"]} and note["framework"] == "keras"


def test_declared_inputs_are_the_default_example(cnn):
    model, _ = cnn
    staged = jms.stage(model)
    assert staged.report.passed
    assert [(s.name, s.shape) for s in staged.input_specs] == [("image", (2, 8, 8, 3))]
    assert "declared input shapes" in staged.warnings[0]


def test_errors_say_what_to_do(two):
    model, example = two
    with pytest.raises(jms.MissingInputError, match="example_inputs="):
        jms.stage(model)  # subclassed: no declared input shapes
    with pytest.raises(jms.InvalidOptionError, match="does not apply to Keras models"):
        jms.stage(model, example, format="safetensors")
    with pytest.raises(jms.InvalidOptionError, match="PyTorch models only"):
        jms.stage(model, example, device="cpu")
    with pytest.raises(jms.InvalidOptionError, match="opsets"):
        jms.stage(model, example, opset=99)
    unbuilt = models.TwoInputs()
    with pytest.raises(jms.InvalidOptionError, match="not built"):
        jms.stage(unbuilt, format="weights")


def test_formats_per_framework():
    assert jms.formats("keras") == ["onnx", "savedmodel", "keras", "weights"]
    assert jms.formats("tensorflow") == ["onnx", "savedmodel"]
    assert "safetensors" in jms.formats() and "savedmodel" not in jms.formats()


@pytest.mark.parametrize("fmt", ["weights", "keras"])
def test_load_into_a_fresh_keras_model(tmp_path, cnn, fmt):
    model, _ = cnn
    path = jms.export(model, tmp_path, format=fmt)
    fresh = models.cnn()
    keras.utils.set_random_seed(7)
    fresh.set_weights([np.random.standard_normal(w.shape).astype(w.dtype) for w in fresh.weights])
    jms.load_into(fresh, path)
    assert all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), model.get_weights()))


def test_load_into_a_different_keras_model_is_refused_and_changes_nothing(tmp_path, cnn):
    model, _ = cnn
    path = jms.export(model, tmp_path, format="weights")
    other = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)])
    before = other.get_weights()
    with pytest.raises(jms.StateDictMismatchError, match="do not fit"):
        jms.load_into(other, path)
    assert all(np.array_equal(a, b) for a, b in zip(before, other.get_weights()))


def _fail_at_done(step: str, fraction: float) -> None:
    if step == "done":
        raise RuntimeError("progress callback failed")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"bogus": 1}, jms.InvalidOptionError),  # a format option checked before any folder
        ({"progress": _fail_at_done}, RuntimeError),  # the callback failing at the very end
        ({"progress": "not callable"}, jms.InvalidOptionError),
    ],
)
def test_a_failed_keras_stage_leaves_no_work_folder(tmp_path, monkeypatch, cnn, options, error):
    # Given a private temporary folder
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model, x = cnn
    # When a stage fails on a bad option or in its progress callback
    with pytest.raises(error):
        jms.stage(model, x, format="keras", **options)
    # Then no work folder is left behind
    assert list(tmp_path.iterdir()) == []


def _mixed(policy: str, build):
    keras.mixed_precision.set_global_policy(policy)
    try:
        return build()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_a_bfloat16_model_is_refused_for_onnx_with_the_reason_and_saved_otherwise(cnn):
    # Given a CNN built under the mixed_bfloat16 policy (ONNX Runtime has no bfloat16 Conv on CPU)
    model, x = _mixed("mixed_bfloat16", models.cnn), cnn[1]
    # When it is staged to ONNX, then the answer is a clear no that names the way out
    with pytest.raises(jms.ExportError, match=r"bfloat16.*format='savedmodel'"):
        jms.stage(model, x)
    # and a SavedModel is judged at bfloat16's tolerances, its output spec saying bfloat16
    staged = jms.stage(model, x, format="savedmodel")
    assert staged.report.passed and (staged.report.atol, staged.report.rtol) == (5e-2, 5e-2)
    assert staged.output_specs[0].dtype == "bfloat16"


def test_tolerances_follow_each_outputs_dtype():
    # Given a mixed_float16 model with a float16 output and a float32 one
    def build():
        image = keras.Input((6,), name="image")
        hidden = keras.layers.Dense(4)(image)
        return keras.Model(image, {"half": keras.layers.Dense(3)(hidden),
                                   "full": keras.layers.Dense(2, dtype="float32")(hidden)})  # fmt: skip

    model = _mixed("mixed_float16", build)
    # When it is staged with default tolerances
    staged = jms.stage(model, models.array(2, 6), format="savedmodel")
    # Then each output was judged at its own dtype's defaults, and the warnings say so
    dtypes = {s.name: s.dtype for s in staged.output_specs}
    assert dtypes == {"full": "float32", "half": "float16"}
    assert (staged.report.atol, staged.report.rtol) == (1e-2, 1e-2)
    assert any("full (float32) atol=0.0001 rtol=0.001" in w for w in staged.warnings)
    # and tolerances given to verify apply to every output
    assert staged.verify(atol=0.0, rtol=0.0).atol == 0.0
    assert staged._job.output_tolerances == {}


def test_a_float32_model_keeps_float32_tolerances(cnn):
    staged = jms.stage(*cnn, format="savedmodel")
    assert (staged.report.atol, staged.report.rtol) == (1e-4, 1e-3)
    assert not any("tolerances" in w for w in staged.warnings)


def test_without_example_inputs_the_declared_none_dims_stay_dynamic(tmp_path):
    # Given a model declared with a None batch and a None sequence length
    model = keras.Sequential([keras.Input((None, 3), name="steps"), keras.layers.Dense(4)])
    # When it is staged without example inputs (a stand-in of 2 on each None dim)
    staged = jms.stage(model)
    # Then those dims are dynamic in the artifact, probed at other sizes, and the warning says so
    assert staged.dynamic_axes == {"steps": {0: "batch", 1: "steps_dim1"}}
    assert {"batch=1", "steps_dim1=1"} <= {p.name for p in staged.report.probes}
    assert "the None dims stay dynamic (steps:0=batch, steps:1=steps_dim1)" in staged.warnings[0]
    session = jms.load(staged.write(tmp_path))
    x = models.array(5, 7, 3)
    np.testing.assert_allclose(session.run(None, {"steps": x})[0], np.asarray(model(x)), atol=1e-5)


def test_a_load_into_mismatch_keeps_keras_detail_without_the_values(tmp_path, cnn):
    path = jms.export(cnn[0], tmp_path, format="weights")
    other = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(6, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)])  # fmt: skip
    with pytest.raises(jms.StateDictMismatchError) as err:
        jms.load_into(other, path)
    message = str(err.value)
    assert "variable.shape=(3, 3, 3, 6), Received: value.shape=(3, 3, 3, 4)" in message
    assert "value=[...]" in message and "\n" not in message


def test_tensorflow_info_logs_are_captured(cnn):
    import io
    import logging

    # Given TensorFlow's logger at INFO with a handler of its own (as in a notebook)
    logger, stream = logging.getLogger("tensorflow"), io.StringIO()
    handler, level = logging.StreamHandler(stream), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        # When a SavedModel is staged (TensorFlow logs "Assets written to ...")
        jms.stage(*cnn, format="savedmodel")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    # Then nothing reached the user's handler
    assert "Assets written" not in stream.getvalue()
