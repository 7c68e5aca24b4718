"""Which framework an object belongs to, without importing any; the optional imports, checked."""

from __future__ import annotations

import importlib
import sys
from typing import Any

from ..errors import MissingDependencyError

INSTALL_HINT = 'pip install "jupyter_modelsave[tensorflow]"'
KERAS_FRAMEWORKS = ("keras", "tensorflow")
TF_ONLY_FORMATS = ("onnx", "savedmodel")  # need Keras' TensorFlow backend


def framework_of(obj: Any) -> str | None:
    """``"keras"``, ``"tensorflow"`` (a ``tf.Module``), ``"torch"`` or None.

    Only frameworks already in ``sys.modules`` are asked: an object of a framework that was never
    imported cannot exist. A Keras model on the torch backend is also an ``nn.Module``: "keras".
    """
    keras = sys.modules.get("keras")
    model_class = getattr(keras, "Model", None)
    if isinstance(model_class, type) and isinstance(obj, model_class):
        return "keras"
    tf = sys.modules.get("tensorflow")
    module_class = getattr(tf, "Module", None)
    if isinstance(module_class, type) and isinstance(obj, module_class):
        return "tensorflow"
    torch = sys.modules.get("torch")
    nn = getattr(torch, "nn", None)
    if nn is not None and isinstance(obj, nn.Module):
        return "torch"
    return None


def keras_backend() -> str | None:
    """The backend of the imported Keras, or None when Keras is not imported."""
    keras = sys.modules.get("keras")
    backend = getattr(getattr(keras, "backend", None), "backend", None)
    return backend() if callable(backend) else None


def require(module: str, what: str) -> Any:
    """Import an optional dependency, or ``MissingDependencyError`` saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"{what} needs the {module.split('.')[0]} package, which is not installed "
            f"({err}). Install the TensorFlow extra: {INSTALL_HINT}"
        ) from None


def tensorflow(what: str = "This") -> Any:
    return require("tensorflow", what)


def keras(what: str = "This") -> Any:
    return require("keras", what)


def check_tf_backend(format_name: str) -> None:
    """Formats that go through TensorFlow graphs need Keras' TensorFlow backend."""
    backend = keras_backend()
    if backend not in (None, "tensorflow"):
        raise MissingDependencyError(
            f"format {format_name!r} needs Keras' TensorFlow backend; this Keras runs on "
            f"{backend!r}. Save with format='keras' or 'weights', or set "
            "KERAS_BACKEND=tensorflow before importing Keras."
        )
