"""The native ``.keras`` archive (architecture, weights, and the compile state).

Parity is a round trip: the archive is reloaded and every weight must come back bitwise equal.
``jms.load`` returns the Keras model, uncompiled. Only trusted archives load (signed by this user,
or ``trusted=True``): the archive's config decides which layers Keras builds and with which
sizes, and Keras allocates every weight at those sizes before it reads the stored ones, so a
300-byte config can ask for gigabytes; ``Lambda`` layers hold Python bytecode. An untrusted
archive raises ``UnsafeArtifactError`` before Keras opens it; share weights with
``format="weights"`` (``.weights.h5``), which loads untrusted. A trusted archive loads with
Keras' ``safe_mode`` off (its ``Lambda`` layers are the user's own or trusted code).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from .._capture import captured_output, first_line
from ..errors import ExportError, UnsafeArtifactError
from ..frameworks.keras import require, to_numpy
from ..verify import Progress, weights_parity
from .base import EXTRA_FILE, WEIGHTS, ArtifactFormat, Exported, ExportJob, embedded_note

FILE = "model.keras"


class KerasFileFormat(ArtifactFormat):
    name = "keras"
    extension = ".keras"
    description = "native Keras archive (architecture + weights), checked by a bitwise reload"
    capabilities = WEIGHTS  # a program too, but checked by its weights' round trip

    def export(self, job: ExportJob) -> Exported:
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
            archive.writestr(EXTRA_FILE, embedded_note(job))
        return Exported(path, "keras")

    def verify(
        self, exported: Exported, job: ExportJob, atol: float, rtol: float, progress: Progress
    ) -> Any:
        try:  # our own file, just saved from the live model: its code is the user's own
            reloaded = self.load(exported.path, trusted=True)
        except Exception as err:
            raise ExportError(
                f"The saved .keras archive does not load back: {first_line(err)}. Register "
                "custom classes with @keras.saving.register_keras_serializable() and give them "
                "get_config(), or save with format='weights'."
            ) from err
        live = job.adapter.live_weights(job.model)
        return weights_parity(
            job.model, dict(zip(live, (to_numpy(w) for w in reloaded.weights))), live
        )

    def load(self, path: Path, map_location: Any = "cpu", trusted: bool = False) -> Any:
        if not trusted:
            raise UnsafeArtifactError(
                f"{Path(path).name} is a Keras model archive: Keras builds the layers its config "
                "names, with the sizes it gives, and Lambda layers hold Python code, so loading "
                "it could run code or fill memory. Artifacts you wrote yourself are signed with "
                "your key and load as they are; for this one pass trusted=True only if you trust "
                "its source, or ask for format='weights' (.weights.h5), which loads untrusted."
            )
        keras = require("keras", "Loading a .keras archive")
        with captured_output():  # trusted: Lambda layers' code is the user's own or trusted
            return keras.saving.load_model(str(path), compile=False, safe_mode=False)
