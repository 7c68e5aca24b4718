"""How the notebook surfaces (magic, widget) write numbers, the same way the sidebar does."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

_UNITS = ("B", "KB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def human_size(size: int) -> str:
    """A byte count as JupyterLab's file browser writes it: powers of 1024, one decimal at most.

    ``102_400_000`` -> ``"97.7 MB"``, ``1536`` -> ``"1.5 KB"``, ``2048`` -> ``"2 KB"``. This is
    ``formatFileSize(bytes, 1, 1024)`` of ``@jupyterlab/filebrowser``, which the sidebar calls
    itself, so the magic, the widget, the sidebar and the file browser show the same text for one
    file (``tests/test_display.py`` runs both on the same numbers).
    """
    if size == 0:
        return "0 B"
    power = math.floor(math.log(size) / math.log(1024))
    if not 0 <= power < len(_UNITS):
        return str(size)
    value = (Decimal(size) / Decimal(1024**power)).quantize(Decimal("0.1"), ROUND_HALF_UP)
    text = f"{value:f}".removesuffix(".0")
    return f"{text} {_UNITS[power]}"
