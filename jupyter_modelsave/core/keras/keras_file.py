"""The native ``.keras`` archive (architecture, weights, and the compile state).

Parity is a round trip: the archive is reloaded and every weight must come back bitwise equal.
``jms.load`` returns the Keras model, uncompiled, with ``safe_mode=True`` (an archive whose
``Lambda`` layers hold Python bytecode is refused with ``UnsafeArtifactError`` unless
``trusted=True``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from .._capture import captured_output, first_line
from ..errors import ExportError, UnsafeArtifactError
from ..formats.base import Exported
from ..verify import Progress
from . import _tf
from .base import EXTRA_FILE, KerasFormat, note
from .job import to_numpy
from .parity import device_of, live_weights, weights_parity

FILE = "model.keras"


class KerasFileFormat(KerasFormat):
    name = "keras"
    extension = ".keras"
    description = "native Keras archive (architecture + weights), checked by a bitwise reload"
    needs_inputs = False

    def export(self, job: Any) -> Exported:
        path = job.workdir / FILE
        try:
            with captured_output():
                job.model.save(str(path))
        except Exception as err:
            raise ExportError(
                f"Keras could not save the model: {type(err).__name__}: {first_line(err)}. "
                "Subclassed models need get_config() (or save with format='weights')."
            ) from err
        with zipfile.ZipFile(path, "a") as archive:  # Keras ignores entries it does not know
            archive.writestr(EXTRA_FILE, note(job))
        return Exported(path, "keras")

    def verify(
        self, exported: Exported, job: Any, atol: float, rtol: float, progress: Progress
    ) -> Any:
        try:  # our own file, just saved from the live model: its code is the user's own
            reloaded = self.load(exported.path, trusted=True)
        except Exception as err:
            raise ExportError(
                f"The saved .keras archive does not load back: {first_line(err)}. Register "
                "custom classes with @keras.saving.register_keras_serializable() and give them "
                "get_config(), or save with format='weights'."
            ) from err
        reloaded_weights = [to_numpy(w) for w in reloaded.weights]
        return weights_parity(live_weights(job.model), reloaded_weights, device_of(job.model))

    def load(self, path: Path, map_location: Any = "cpu", trusted: bool = False) -> Any:
        keras = _tf.keras("Loading a .keras archive")
        try:
            with captured_output():
                return keras.saving.load_model(str(path), compile=False, safe_mode=not trusted)
        except ValueError as err:
            if "safe_mode" not in str(err):
                raise
            raise UnsafeArtifactError(
                f"{Path(path).name} holds Python code (e.g. a Lambda layer); loading it could run "
                "any code. Pass trusted=True only for files you trust."
            ) from None
