"""The registry of artifact formats: one module per format, one line here per format.

A format is an ``ArtifactFormat`` (see ``base.py``) with the verbs export, verify and load; the
atomic write is shared by all formats (``artifacts.py``). A format name may have one
implementation per framework (``onnx`` for PyTorch and for Keras/TensorFlow): the registry says
which frameworks each applies to, so listing formats never imports a framework.
"""

from __future__ import annotations

import importlib

from ..errors import InvalidOptionError, shown
from .base import ArtifactFormat

FRAMEWORKS = ("torch", "keras", "tensorflow")
_CORE = "jupyter_modelsave.core.formats"
_KERAS = "jupyter_modelsave.core.keras"

# format name -> {framework: "module:class"}, imported on first use
REGISTRY: dict[str, dict[str, str]] = {
    "onnx": {
        "torch": f"{_CORE}.onnx:OnnxFormat",
        "keras": f"{_KERAS}.onnx:KerasOnnxFormat",
        "tensorflow": f"{_KERAS}.onnx:KerasOnnxFormat",
    },
    "safetensors": {"torch": f"{_CORE}.safetensors_format:SafetensorsFormat"},
    "state_dict": {"torch": f"{_CORE}.state_dict:StateDictFormat"},
    "checkpoint": {"torch": f"{_CORE}.checkpoint:CheckpointFormat"},
    "torchscript": {"torch": f"{_CORE}.torchscript:TorchScriptFormat"},
    "torch_export": {"torch": f"{_CORE}.torch_export:TorchExportFormat"},
    "savedmodel": {
        "keras": f"{_KERAS}.savedmodel:SavedModelFormat",
        "tensorflow": f"{_KERAS}.savedmodel:SavedModelFormat",
    },
    "keras": {"keras": f"{_KERAS}.keras_file:KerasFileFormat"},
    "weights": {"keras": f"{_KERAS}.weights:KerasWeightsFormat"},
}


def formats(framework: str | None = "torch") -> list[str]:
    """The names accepted by ``format=`` for a framework's models (``None``: every name).

    ``framework``: ``"torch"`` (the default), ``"keras"`` or ``"tensorflow"`` (a ``tf.Module``).
    """
    if framework is not None and framework not in FRAMEWORKS:
        raise InvalidOptionError(
            f"Unknown framework {shown(framework)}; choose one of: {', '.join(FRAMEWORKS)}."
        )
    return [name for name, impls in REGISTRY.items() if framework is None or framework in impls]


def get_format(name: str, framework: str | None = None) -> ArtifactFormat:
    """The format ``name`` for ``framework``'s models (None: its first registered framework)."""
    impls = REGISTRY.get(name) if isinstance(name, str) else None
    if impls is None:
        raise InvalidOptionError(
            f"Unknown format {shown(name)}; choose one of: {', '.join(formats(framework))}."
        )
    target = impls.get(framework) if framework is not None else next(iter(impls.values()))
    if target is None:
        raise InvalidOptionError(
            f"format {name!r} does not apply to {_FRAMEWORK_NOUN.get(framework, framework)}; "
            f"choose one of: {', '.join(formats(framework))}."
        )
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)()


_FRAMEWORK_NOUN = {
    "torch": "PyTorch models",
    "keras": "Keras models",
    "tensorflow": "tf.Module objects",
}


def format_for_path(path: str) -> ArtifactFormat | None:
    """The format a file without manifest looks like (its extension; ``.pt`` files are sniffed)."""
    for target in dict.fromkeys(t for impls in REGISTRY.values() for t in impls.values()):
        module, cls = target.split(":")
        fmt = getattr(importlib.import_module(module), cls)()
        if fmt.matches(path):
            return fmt
    return None
