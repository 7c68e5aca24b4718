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

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from .._capture import captured_output, first_line
from ..errors import ExportError, ModelSaveError, UnsafeArtifactError
from ..formats.base import Exported
from ..inputs import ExampleInputs
from . import _tf
from .base import EXTRA_FILE, KerasFormat, note
from .job import KerasJob, flatten_outputs

FOLDER = "artifact.savedmodel"


class SavedModelFormat(KerasFormat):
    name = "savedmodel"
    extension = ".savedmodel"
    description = "TensorFlow SavedModel folder (serve endpoint), checked by reloading it in TF"
    frameworks: ClassVar[tuple[str, ...]] = ("keras", "tensorflow")

    def matches(self, path: Path) -> bool:
        return (Path(path) / "saved_model.pb").is_file()

    def export(self, job: Any) -> Exported:
        _tf.check_tf_backend(self.name)
        folder = job.workdir / FOLDER
        try:
            with captured_output():
                if job.framework == "keras":
                    job.model.export(str(folder), format="tf_saved_model",
                                     input_signature=job.signature(), verbose=False)  # fmt: skip
                else:
                    _save_module(job, folder)
        except ModelSaveError:
            raise
        except Exception as err:  # TF raises many unrelated types
            raise ExportError(
                f"The model could not be saved as a SavedModel: {type(err).__name__}: "
                f"{first_line(err)}. Check that it runs on the example inputs inside a "
                "tf.function, or save it with format='keras'."
            ) from err
        (folder / EXTRA_FILE).write_text(note(job))
        return Exported(folder, "tf.saved_model")

    def runner(self, exported: Exported, job: Any) -> Callable[[ExampleInputs], dict[str, Any]]:
        loaded = self.load(exported.path, trusted=True)  # just exported from the live model

        def run(probe: ExampleInputs) -> dict[str, Any]:
            args = job.layout.pack([t.numpy() for t in probe.tensors])
            _, arrays = flatten_outputs(loaded.serve(*args))
            return dict(zip(job.output_names, arrays))

        return run

    def load(self, path: Path, map_location: Any = "cpu", trusted: bool = False) -> Any:
        if not trusted:
            raise UnsafeArtifactError(
                f"{Path(path).name} is a TensorFlow SavedModel, a program whose ops can read and "
                "write files, and loading it runs part of it. Artifacts you wrote yourself are "
                "signed with your key and load as they are; for this one pass trusted=True only "
                "if you trust its source."
            )
        tf = _tf.tensorflow("Loading a SavedModel")
        return tf.saved_model.load(str(path))


def _save_module(job: KerasJob, folder: Path) -> None:
    tf = _tf.tensorflow("Saving a tf.Module")
    model = job.model
    wrapper = tf.Module()
    wrapper.model = model  # tracks the module's variables
    wrapper.serve = tf.function(lambda *args: model(*args), input_signature=job.signature())
    tf.saved_model.save(
        wrapper, str(folder), signatures={"serving_default": wrapper.serve.get_concrete_function()}
    )
