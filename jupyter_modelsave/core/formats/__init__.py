"""The registry of artifact formats: one module per format, one line here per format.

A format is an ``ArtifactFormat`` (see ``base.py``) with the verbs export, verify and load; the
atomic write is shared by all formats (``artifacts.py``).
"""

from __future__ import annotations

import importlib

from ..errors import InvalidOptionError
from .base import ArtifactFormat

# format name -> "module:class", imported on first use
REGISTRY: dict[str, str] = {
    "onnx": "jupyter_modelsave.core.formats.onnx:OnnxFormat",
    "safetensors": "jupyter_modelsave.core.formats.safetensors_format:SafetensorsFormat",
    "state_dict": "jupyter_modelsave.core.formats.state_dict:StateDictFormat",
    "checkpoint": "jupyter_modelsave.core.formats.checkpoint:CheckpointFormat",
    "torchscript": "jupyter_modelsave.core.formats.torchscript:TorchScriptFormat",
    "torch_export": "jupyter_modelsave.core.formats.torch_export:TorchExportFormat",
}


def formats() -> list[str]:
    """The names accepted by ``format=``."""
    return list(REGISTRY)


def get_format(name: str) -> ArtifactFormat:
    target = REGISTRY.get(name) if isinstance(name, str) else None
    if target is None:
        raise InvalidOptionError(f"Unknown format {name!r}; choose one of: {', '.join(REGISTRY)}.")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)()


def format_for_path(path: str) -> ArtifactFormat | None:
    """The format a file without manifest looks like (its extension; ``.pt`` files are sniffed)."""
    for name in REGISTRY:
        fmt = get_format(name)
        if fmt.matches(path):
            return fmt
    return None
