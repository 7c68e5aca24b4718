"""The registry of artifact formats: one module per format, one line here per format.

A format is an ``ArtifactFormat`` (see ``base.py``) with the verbs export, verify and load, and
its ``Capabilities``; the atomic write is shared by all formats (``artifacts.py``). A format name
may have one implementation per framework (``onnx`` for PyTorch and for Keras/TensorFlow): the
registry says which frameworks each serves, so listing formats never imports a framework.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from ..errors import InvalidOptionError, ModelSaveError, shown
from ..frameworks import FRAMEWORKS, adapter
from .base import ArtifactFormat

_CORE = "jupyter_modelsave.core.formats"

# format name -> {framework: "module:class"}, imported on first use
REGISTRY: dict[str, dict[str, str]] = {
    "onnx": {
        "torch": f"{_CORE}.onnx:OnnxFormat",
        "keras": f"{_CORE}.keras_onnx:KerasOnnxFormat",
        "tensorflow": f"{_CORE}.keras_onnx:ModuleOnnxFormat",
    },
    "safetensors": {"torch": f"{_CORE}.safetensors_format:SafetensorsFormat"},
    "state_dict": {"torch": f"{_CORE}.state_dict:StateDictFormat"},
    "checkpoint": {"torch": f"{_CORE}.checkpoint:CheckpointFormat"},
    "torchscript": {"torch": f"{_CORE}.torchscript:TorchScriptFormat"},
    "torch_export": {"torch": f"{_CORE}.torch_export:TorchExportFormat"},
    "savedmodel": {
        "keras": f"{_CORE}.savedmodel:SavedModelFormat",
        "tensorflow": f"{_CORE}.savedmodel:ModuleSavedModelFormat",
    },
    "keras": {"keras": f"{_CORE}.keras_file:KerasFileFormat"},
    "weights": {"keras": f"{_CORE}.keras_weights:KerasWeightsFormat"},
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


def capabilities(framework: str) -> dict[str, dict[str, Any]]:
    """Each format of ``framework``'s models, described as the surfaces read it (``describe``)."""
    return {name: describe(name, framework) for name in formats(framework)}


def describe(name: str, framework: str) -> dict[str, Any]:
    """A format as JSON (``protocol.FormatInfo``): extension, description, its
    ``Capabilities``, per exporter the opsets it takes, and the precisions this machine makes."""
    fmt = get_format(name, framework)
    caps = fmt.capabilities
    return {
        "extension": fmt.extension,
        "description": fmt.description,
        **dataclasses.asdict(caps),
        "exporters": list(caps.exporters),
        "opsets": _opsets(framework, caps.exporters) if caps.opsets else {},
        "precisions": list(fmt.precisions_here()),
    }


def _opsets(framework: str, exporters: tuple[str, ...]) -> dict[str, list[int]]:
    """exporter -> [lowest, highest] opset (``auto`` when the format offers no choice); none
    when the exporter's package is missing."""
    found = {}
    for exporter in exporters or ("auto",):
        try:
            low, high, _ = adapter(framework).opsets(exporter)
        except ModelSaveError:  # e.g. tf2onnx is not installed
            continue
        found[exporter] = [low, high]
    return found


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
            f"format {name!r} does not apply to {adapter(framework).noun}; "
            f"choose one of: {', '.join(formats(framework))}."
        )
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)()


def _every_format() -> list[ArtifactFormat]:
    """One instance of each registered implementation, in registry order."""
    targets = dict.fromkeys(t for impls in REGISTRY.values() for t in impls.values())
    return [getattr(importlib.import_module(t.split(":")[0]), t.split(":")[1])() for t in targets]


def format_for_path(path: str) -> ArtifactFormat | None:
    """The format a file without manifest looks like (its extension; ``.pt`` files are sniffed)."""
    return next((fmt for fmt in _every_format() if fmt.matches(path)), None)


def extensions() -> set[str]:
    """Every registered format's file extension (``.onnx``, ``.pt``, ``.weights.h5``, ...)."""
    return {fmt.extension for fmt in _every_format()}
