"""What the Keras/TensorFlow formats share: the frameworks they serve and the embedded note."""

from __future__ import annotations

import json
import sys
from typing import Any, ClassVar

from ... import __version__
from ..formats.base import ArtifactFormat, Exported
from ..verify import Progress
from .job import KerasJob

EXTRA_FILE = "jupyter_modelsave.json"  # the note inside a SavedModel folder or a .keras archive


class KerasFormat(ArtifactFormat):
    """A format of Keras models (and, where listed, plain ``tf.Module``s)."""

    frameworks: ClassVar[tuple[str, ...]] = ("keras",)

    def verify(
        self, exported: Exported, job: Any, atol: float, rtol: float, progress: Progress
    ) -> Any:
        from .parity import outputs_parity

        return outputs_parity(self.runner(exported, job), job, atol, rtol, progress)


def versions() -> dict[str, str]:
    """Versions of the libraries that made a Keras/TF artifact (those that are imported)."""
    found = {"jupyter_modelsave": __version__}
    for module in ("keras", "tensorflow", "tf2onnx", "onnx"):
        version = getattr(sys.modules.get(module), "__version__", None)
        if version:
            found[module] = str(version)
    found["python"] = sys.version.split()[0]
    return found


def note(job: KerasJob) -> str:
    """JSON embedded in the artifact: producer, versions, framework, I/O names, metadata."""
    return json.dumps({"producer": "jupyter_modelsave", "versions": versions(),
                       "framework": job.framework, "inputs": job.input_names,
                       "outputs": job.output_names, "metadata": job.metadata})  # fmt: skip
