"""``jms.load_into`` for Keras models: a ``weights`` or ``keras`` artifact's weights, checked.

``core.loading.load_into`` checks the artifact against its manifest, then hands Keras models
here. A mismatch raises ``StateDictMismatchError`` and leaves the model's weights as they were.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from .._capture import captured_output, strip_ansi
from ..errors import InvalidOptionError, StateDictMismatchError
from ..formats.base import ArtifactFormat
from ._h5_limits import check_h5


def load_into_keras(model: Any, path: Path, fmt: ArtifactFormat, *, trusted: bool = False) -> None:
    """Copy the weights of a checked ``weights``/``keras`` artifact into a Keras model."""
    if not hasattr(model, "set_weights"):
        raise InvalidOptionError(
            f"load_into needs a Keras model for {path.name}; for a tf.Module load the "
            "SavedModel with jms.load."
        )
    before = [np.array(w, copy=True) for w in model.get_weights()]
    if fmt.name == "weights":
        check_h5(path)  # before Keras reads it: no data from other files, no fill-value bombs
        try:
            with captured_output():
                model.load_weights(str(path))
        except Exception as err:  # Keras raises ValueError with several messages
            model.set_weights(before)
            raise StateDictMismatchError(
                f"The weights in {path.name} do not fit {type(model).__name__}: "
                f"{_whole_message(err)} Check that the model is built with the same "
                "configuration."
            ) from None
        return
    if fmt.name != "keras":
        raise InvalidOptionError(
            f"A {fmt.name} artifact holds no Keras weights to load into a model; export them "
            "with format='weights' or 'keras', or use jms.load for this one."
        )
    weights = fmt.load(path, trusted=trusted).get_weights()
    reshaped = [
        f"weight {i}: model {list(a.shape)}, artifact {list(b.shape)}"
        for i, (a, b) in enumerate(zip(before, weights))
        if a.shape != b.shape
    ]
    if len(weights) != len(before) or reshaped:
        counts = f"the model has {len(before)} weights, the artifact {len(weights)}"
        raise StateDictMismatchError(
            f"The weights in {path.name} do not fit {type(model).__name__}: "
            f"{'; '.join(reshaped) or counts}. Check that the model is built with the same "
            "configuration.",
            shape_mismatches=reshaped,
        )
    model.set_weights(weights)


_ARRAY_DUMP = re.compile(r"\[[\[\]\s\d.eE+-]{40,}\]")  # a variable's values, printed


def _whole_message(err: BaseException, limit: int = 1000) -> str:
    """Keras' message on one line with its detail (which layer expected which shapes), less the
    values of the variables it prints."""
    text = _ARRAY_DUMP.sub("[...]", " ".join(strip_ansi(str(err)).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."
