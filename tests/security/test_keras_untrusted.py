"""Untrusted Keras artifacts read no other file and stay within the memory bound.

Issue 14, finding 3: a ``.weights.h5`` whose dataset uses HDF5 external storage returned
``/etc/passwd`` as weights, and a 4.5 KB file with a fill-value dataset grew the process by
1 GiB. Siblings: virtual datasets and external links (other files), soft links, gzip chunks.
Program formats (``.keras``, SavedModel) load only when trusted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import jupyter_modelsave as jms

from ._hostile import (
    h5_compressed,
    h5_external_link,
    h5_external_storage,
    h5_fill_value,
    h5_secret,
    h5_soft_link,
    h5_virtual_dataset,
    keras_config_bomb,
    string_of,
    with_manifest,
)

h5py = pytest.importorskip("h5py")

SECRET = b"root:x:0:0:the user's secret\n"


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_bytes(SECRET)
    return path


READING_OTHER_FILES = {
    "external storage": lambda dest, secret: h5_external_storage(dest, secret),
    "a virtual dataset": lambda dest, secret: h5_virtual_dataset(
        dest, h5_secret(secret.with_suffix(".h5"), SECRET)),
    "an external link": lambda dest, secret: h5_external_link(
        dest, h5_secret(secret.with_suffix(".h5"), SECRET)),
    "a soft link": lambda dest, secret: h5_soft_link(dest),
}  # fmt: skip
LOADERS = {
    "load": lambda p: jms.load(p),
    "load, manifest with the right sha256": lambda p: jms.load(with_manifest(p, "weights",
                                                                             framework="keras")),
    "from_base64": lambda p: jms.from_base64(string_of(p, "weights")),
    "trusted": lambda p: jms.load(p, trusted=True),
}  # fmt: skip


def _values(loaded: object) -> bytes:
    return b"".join(np.asarray(v).tobytes() for v in dict(loaded).values())  # type: ignore[call-overload]


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("attack", list(READING_OTHER_FILES))
def test_a_weights_file_never_reads_another_file(attack, loader, secret, tmp_path):
    # Given a .weights.h5 whose dataset's values come from another file
    path = READING_OTHER_FILES[attack](tmp_path / "model.weights.h5", secret)
    if attack != "a soft link":  # the attack is live: h5py alone returns the secret
        with h5py.File(path, "r") as fh:
            assert SECRET in fh["layers/dense/vars/0"][()].tobytes()
    # When it is loaded in any way, even trusted, then it is refused: Keras never writes these
    with pytest.raises(jms.UnsafeArtifactError, match="not a weights file as Keras writes it"):
        LOADERS[loader](path)


@pytest.mark.parametrize("loader", ["load", "load, manifest with the right sha256", "from_base64"])
@pytest.mark.parametrize("build", [h5_fill_value, h5_compressed], ids=["fill value", "gzip"])
def test_a_weights_file_declaring_more_than_it_holds_is_refused(
    build, loader, hostile_load, tmp_path
):
    # Given a small .weights.h5 that reads as 1 GiB (fill value) or 256 MiB (gzip chunks)
    path = build(tmp_path / "model.weights.h5")
    assert path.stat().st_size < 2**20
    # When it is loaded, then it is refused within the memory bound
    error = hostile_load(lambda: LOADERS[loader](path), path)
    assert isinstance(error, jms.UnsafeArtifactError) and "declare" in str(error)


def test_an_honest_weights_file_still_loads(tmp_path):
    path = tmp_path / "model.weights.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("layers/dense/vars/0", data=np.arange(6, dtype="f4"))
    assert np.array_equal(jms.load(path)["layers/dense/vars/0"], np.arange(6, dtype="f4"))


# ------------------------------------------------------------------ with Keras itself


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def _dense(keras):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


@pytest.mark.parametrize("attack", ["external storage", "an external link"])
def test_load_into_a_keras_model_never_reads_another_file(attack, keras, secret, tmp_path):
    model = _dense(keras)
    before = [w.copy() for w in model.get_weights()]
    path = READING_OTHER_FILES[attack](tmp_path / "model.weights.h5", secret)
    with pytest.raises(jms.UnsafeArtifactError):
        jms.load_into(model, path)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_load_into_a_keras_model_refuses_a_fill_value_bomb(keras, hostile_load, tmp_path):
    model = _dense(keras)
    path = h5_fill_value(tmp_path / "model.weights.h5")
    error = hostile_load(lambda: jms.load_into(model, path), path)
    assert isinstance(error, jms.UnsafeArtifactError)


@pytest.mark.parametrize("loader", ["load", "load_into", "from_base64"])
def test_an_untrusted_keras_archive_is_refused_before_keras_builds_it(
    loader, keras, hostile_load, tmp_path
):
    # Given a 1 KB .keras whose config asks Keras to build a 1 GiB embedding
    path = keras_config_bomb(tmp_path / "model.keras")
    calls = {
        "load": lambda: jms.load(path),
        "load_into": lambda: jms.load_into(_dense(keras), path),
        "from_base64": lambda: jms.from_base64(string_of(path, "keras")),
    }
    # When it is loaded untrusted, then it is refused before Keras reads it
    error = hostile_load(calls[loader], path)
    assert isinstance(error, jms.UnsafeArtifactError) and "trusted=True" in str(error)


def test_an_untrusted_savedmodel_is_refused_and_your_own_loads(keras, tmp_path):
    pytest.importorskip("tensorflow")
    import shutil

    model = _dense(keras)
    own = jms.export(model, tmp_path / "own", np.zeros((2, 4), "float32"), format="savedmodel")
    assert hasattr(jms.load(own), "serve")  # signed: the user's own
    received = tmp_path / "received.savedmodel"
    shutil.copytree(own, received)  # the same program from someone else: no signature
    with pytest.raises(jms.UnsafeArtifactError, match="trusted=True"):
        jms.load(received)
    with pytest.raises(jms.UnsafeArtifactError, match="trusted=True"):
        jms.from_base64(string_of(received, "savedmodel"))
    with pytest.raises(jms.InvalidOptionError):  # no weights to take: refused before loading
        jms.load_into(model, received)
    assert hasattr(jms.load(received, trusted=True), "serve")
