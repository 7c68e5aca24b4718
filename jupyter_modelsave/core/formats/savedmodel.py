"""TensorFlow SavedModel: a folder, written atomically as a whole by the shared ``write``.

Keras models go through ``model.export(format="tf_saved_model")``; a plain ``tf.Module`` is
wrapped in a module whose ``serve`` is a ``tf.function`` over its ``__call__``. Both artifacts
have a ``serve`` endpoint (and the ``serving_default`` signature) that takes the example's
structure; ``jms.load`` returns ``tf.saved_model.load``'s object.

Only trusted SavedModels load (signed by this user, or ``trusted=True``): a SavedModel is a
TensorFlow program, whose ops can read and write files (``ReadFile``, ``WriteFile``, ...), and
``tf.saved_model.load`` already runs some of it (restore and initializer functions). An untrusted
one raises ``UnsafeArtifactError`` before TensorFlow opens it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._capture import captured_output, first_line
from ..errors import ExportError, ModelSaveError, UnsafeArtifactError
from ..frameworks.keras import NeedsTFBackend, require, signature, to_numpy
from ..inputs import ExampleInputs
from ..verify import ArtifactRunner
from .base import EXTRA_FILE, ArtifactFormat, Capabilities, Exported, ExportJob, embedded_note

FOLDER = "artifact.savedmodel"


class SavedModelFormat(NeedsTFBackend, ArtifactFormat):
    name = "savedmodel"
    extension = ".savedmodel"
    description = "TensorFlow SavedModel folder (serve endpoint), checked by reloading it in TF"
    capabilities = Capabilities(folder=True)

    def matches(self, path: Path) -> bool:
        return (Path(path) / "saved_model.pb").is_file()

    def export(self, job: ExportJob) -> Exported:
        folder = job.workdir / FOLDER
        try:
            with captured_output():
                self.save(job, folder)
        except ModelSaveError:
            raise
        except Exception as err:  # TF raises many unrelated types
            raise ExportError(
                f"The model could not be saved as a SavedModel: {type(err).__name__}: "
                f"{first_line(err)}. Check that it runs on the example inputs inside a "
                "tf.function, or save it with format='keras'."
            ) from err
        (folder / EXTRA_FILE).write_text(embedded_note(job))
        return Exported(folder, "tf.saved_model")

    def save(self, job: ExportJob, folder: Path) -> None:
        job.model.export(str(folder), format="tf_saved_model", input_signature=signature(job),
                         verbose=False)  # fmt: skip

    def runner(self, exported: Exported, job: ExportJob) -> ArtifactRunner:
        loaded = self.load(exported.path, trusted=True)  # just exported from the live model
        flatten = job.adapter.flatten

        def run(probe: ExampleInputs) -> dict[str, Any]:
            _, values = flatten(
                loaded.serve(*probe.layout.pack([t.numpy() for t in probe.tensors]))
            )
            return {n: to_numpy(v) for n, v in zip(job.output_names, values)}

        return run

    def load(self, path: Path, map_location: Any = "cpu", trusted: bool = False) -> Any:
        if not trusted:
            raise UnsafeArtifactError(
                f"{Path(path).name} is a TensorFlow SavedModel, a program whose ops can read and "
                "write files, and loading it runs part of it. Artifacts you wrote yourself are "
                "signed with your key and load as they are; for this one pass trusted=True only "
                "if you trust its source."
            )
        tf = require("tensorflow", "Loading a SavedModel")
        return tf.saved_model.load(str(path))


class ModuleSavedModelFormat(SavedModelFormat):
    """A plain ``tf.Module``, wrapped in a module whose ``serve`` is a ``tf.function`` over its
    ``__call__``."""

    def save(self, job: ExportJob, folder: Path) -> None:
        tf = require("tensorflow", "Saving a tf.Module")
        model = job.model
        wrapper = tf.Module()
        wrapper.model = model  # tracks the module's variables
        wrapper.serve = tf.function(lambda *args: model(*args), input_signature=signature(job))
        tf.saved_model.save(
            wrapper,
            str(folder),
            signatures={"serving_default": wrapper.serve.get_concrete_function()},
        )
