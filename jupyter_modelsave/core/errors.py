"""Every error jupyter_modelsave raises on purpose. Each message says what to do next.

Library code raises these; the magic, the widget and the server routes decide how to show them.
Messages quote the user's values with ``shown``, which never raises and stays short.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for an error message.

    Never raises: an integer over Python's 4300-digit str limit, or an object whose ``repr``
    fails, is named by its type instead.
    """
    try:
        text = repr(value)
    except Exception:  # ValueError for huge ints; anything from a user's __repr__
        if isinstance(value, int):
            return f"an integer of about {int(value.bit_length() * 0.30103) + 1:,} digits"
        return f"<a {type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 6]} ... {text[-2:]}"


class ModelSaveError(Exception):
    """Base class of all jupyter_modelsave errors."""


class InvalidOptionError(ModelSaveError, ValueError):
    """An option (format, opset, dynamic axes, tolerance, name, ...) is not valid."""


class NotAModelError(InvalidOptionError, TypeError):
    """The object given as the model is not a ``torch.nn.Module``."""


class MissingInputError(InvalidOptionError):
    """No example inputs were given and none were recorded from a forward call."""


class ExportError(ModelSaveError):
    """The exporter could not turn the model into the requested format."""


class ParityError(ModelSaveError):
    """The exported artifact does not reproduce the live model's outputs within tolerance."""

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class ArtifactExistsError(ModelSaveError, FileExistsError):
    """The destination already holds a file and ``overwrite=True`` was not given."""


class WriteError(ModelSaveError, OSError):
    """The artifact could not be written (permissions, free space, missing folder, ...)."""


class IntegrityError(ModelSaveError):
    """An artifact on disk does not match the sha256 recorded in its manifest."""


class UnsafeArtifactError(ModelSaveError):
    """Loading the artifact would unpickle arbitrary Python objects (it could run code)."""


class StateDictMismatchError(ModelSaveError):
    """The artifact's weights do not fit the model (missing, unexpected or reshaped keys)."""

    def __init__(
        self,
        message: str,
        missing: list[str] | None = None,
        unexpected: list[str] | None = None,
        shape_mismatches: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.missing = missing or []
        self.unexpected = unexpected or []
        self.shape_mismatches = shape_mismatches or []


class MissingDependencyError(ModelSaveError, ImportError):
    """An optional dependency (TensorFlow, tf2onnx) is needed for this model or artifact."""


class DistributedTimeoutError(ModelSaveError, TimeoutError):
    """A collective call on a sharded model (DTensor weights) did not hear from every rank in time."""


@contextlib.contextmanager
def raised_as(error: type[ModelSaveError], before: str, after: str, *keep: type) -> Iterator[None]:
    """Raise any other exception of the block as ``error(before + "Type: first line" + after)``
    (``_capture.first_line``); ``ModelSaveError``s and the types in ``keep`` pass unchanged."""
    from ._capture import first_line

    try:
        yield
    except (ModelSaveError, *keep):
        raise
    except Exception as err:
        raise error(f"{before}{type(err).__name__}: {first_line(err)}{after}") from err


def typed_errors(step: str, format_name: str) -> contextlib.AbstractContextManager[None]:
    """Raise what is not already a ``ModelSaveError`` (nor ``MemoryError``) as ``ExportError``.

    The formats turn the errors they expect into messages of their own; this is the net under
    them, so no raw exception from an exporter or a runtime leaves ``stage``.
    """
    before = f"The {step} of the {format_name} artifact failed: "
    after = ". Try another format or exporter, or report the model."
    return raised_as(ExportError, before, after, MemoryError)
