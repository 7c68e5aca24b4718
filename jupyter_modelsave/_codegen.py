"""The plain ``jms.export(...)`` call equivalent to what the magic or the widget did.

Both notebook surfaces show it so that a click or a magic line can become reproducible code.
Options equal to ``jms.stage``/``jms.export``'s own defaults are left out, read from their
signatures, so the text stays short and follows the core API as it changes.
"""

from __future__ import annotations

import inspect
from typing import Any


def export_call(model: str, dest: str, example_inputs: str | None = None, **options: Any) -> str:
    """``jms.export(<model>, '<dest>'[, <example_inputs>], <non-default options>)``.

    ``model`` and ``example_inputs`` are Python expressions (inserted as they are); ``options``
    are values (inserted with ``repr``). Without ``example_inputs`` the call reuses the model's
    last recorded forward call, as the surfaces did.
    """
    defaults_ = defaults()
    parts = [model, repr(str(dest))]
    if example_inputs:
        parts.append(example_inputs)
    parts += [
        f"{key}={value!r}"
        for key, value in options.items()
        if not (key in defaults_ and defaults_[key] == value)
    ]
    return f"jms.export({', '.join(parts)})"


def defaults() -> dict[str, Any]:
    """The default values of ``jms.stage``'s and ``jms.export``'s keyword arguments."""
    from .core.staging import export, stage

    params = {
        **inspect.signature(stage).parameters,
        **inspect.signature(export).parameters,
    }
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
