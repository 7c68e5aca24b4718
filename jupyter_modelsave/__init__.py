"""jupyter_modelsave: export a live PyTorch model as a checked, versioned artifact.

``import jupyter_modelsave as jms`` is cheap: torch, onnx and the Jupyter packages are
imported only when a function that needs them is first used (module ``__getattr__``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .core.version import __version__

# module that defines them -> public names (each imported on first access)
_PUBLIC: dict[str, str] = {
    "core.errors": "ModelSaveError ExportError ParityError ArtifactExistsError InvalidOptionError "
    "MissingInputError NotAModelError WriteError IntegrityError UnsafeArtifactError "
    "StateDictMismatchError MissingDependencyError DistributedTimeoutError",
    "core.discovery": "ModelInfo find_models watch unwatch start_recording stop_recording",
    "core.parity": "ParityReport OutputDiff",
    "core.staging": "StagedExport stage export",
    "core.loading": "load load_into",
    "core.catalog": "ArtifactInfo list_artifacts",
    "core.transfer": "to_base64 from_base64",
    "core.distributed.convert": "convert",
    "core.formats": "formats",
    "core.precision": "precisions",
    # notebook widget (ipywidgets); the module is not named "widget", which would shadow jms.widget
    "widgets": "ModelSaveWidget widget",
}
# public name -> module that defines it
_LAZY = {
    name: f"{__name__}.{module}" for module, names in _PUBLIC.items() for name in names.split()
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .core.catalog import ArtifactInfo, list_artifacts
    from .core.discovery import (
        ModelInfo,
        find_models,
        start_recording,
        stop_recording,
        unwatch,
        watch,
    )
    from .core.distributed.convert import convert
    from .core.errors import (
        ArtifactExistsError,
        DistributedTimeoutError,
        ExportError,
        IntegrityError,
        InvalidOptionError,
        MissingDependencyError,
        MissingInputError,
        ModelSaveError,
        NotAModelError,
        ParityError,
        StateDictMismatchError,
        UnsafeArtifactError,
        WriteError,
    )
    from .core.formats import formats
    from .core.loading import load, load_into
    from .core.parity import OutputDiff, ParityReport
    from .core.precision import precisions
    from .core.staging import StagedExport, export, stage
    from .core.transfer import from_base64, to_base64
    from .widgets import ModelSaveWidget, widget


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jupyter_modelsave' has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(module), name)  # cached
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


# --- Jupyter entry points (looked up by name; they import their adapters lazily) ---


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter_modelsave"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_modelsave"}]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_modelsave``: register the ``%modelsave`` magic and start recording
    every model's last call (``jms.start_recording``)."""
    from .core.discovery import start_recording
    from .magics import ModelSaveMagics

    ipython.register_magics(ModelSaveMagics)
    start_recording()


def _load_jupyter_server_extension(server_app: Any) -> None:
    """Register the HTTP handlers of the server extension."""
    from .routes import setup_route_handlers

    setup_route_handlers(server_app.web_app)
    server_app.log.info("Registered jupyter_modelsave server extension")
