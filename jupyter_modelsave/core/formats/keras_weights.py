"""Keras weights only (``.weights.h5``), saved without running the model.

Parity is a bitwise round trip through Keras' own loader: the file is loaded into the live model
and every weight compared, then the live values are put back exactly (``set_weights``), also when
loading fails. ``jms.load`` returns ``{dataset path: numpy array}``; ``model.load_weights(path)``
puts them in a model. Before any load (``jms.load``, ``jms.load_into``) the file is checked with
h5py (``_h5_limits.py``): no external storage, virtual datasets or links to other files, and no
more declared data than the file holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._capture import captured_output, first_line
from ..errors import ExportError
from ..frameworks.keras import require, to_numpy
from ..verify import Progress, weights_parity
from ._h5_limits import check_h5
from .base import WEIGHTS, ArtifactFormat, Exported, ExportJob, embedded_note

FILE = "model.weights.h5"


class KerasWeightsFormat(ArtifactFormat):
    name = "weights"
    extension = ".weights.h5"
    description = "Keras weights (.weights.h5), checked by a bitwise reload"
    capabilities = WEIGHTS

    def export(self, job: ExportJob) -> Exported:
        path = job.workdir / FILE
        try:
            with captured_output():
                job.model.save_weights(str(path))
        except Exception as err:
            raise ExportError(
                f"Keras could not save the weights: {type(err).__name__}: {first_line(err)}."
            ) from err
        h5py = require("h5py", "Writing .weights.h5 files")
        with h5py.File(path, "a") as fh:
            fh.attrs["jupyter_modelsave"] = embedded_note(job)
        return Exported(path, "keras")

    def verify(
        self, exported: Exported, job: ExportJob, atol: float, rtol: float, progress: Progress
    ) -> Any:
        model = job.model
        live = job.adapter.live_weights(model)
        try:
            with captured_output():
                model.load_weights(str(exported.path))
            reloaded = [to_numpy(w).copy() for w in model.weights]
        except Exception as err:
            raise ExportError(f"The weights file does not load back: {first_line(err)}") from err
        finally:
            model.set_weights(list(live.values()))
        return weights_parity(job.model, dict(zip(live, reloaded)), live)

    def check(self, path: Path) -> None:
        """Refuse a file that reads data from elsewhere or declares more than it holds."""
        check_h5(path)

    def load(self, path: Path, map_location: Any = "cpu", trusted: bool = False) -> Any:
        h5py = require("h5py", "Reading .weights.h5 files")
        check_h5(path)
        found: dict[str, np.ndarray] = {}
        with h5py.File(path, "r") as fh:
            fh.visititems(
                lambda name, item: (
                    found.__setitem__(name, np.asarray(item))
                    if isinstance(item, h5py.Dataset)
                    else None
                )
            )
        return found
