"""Checks of a ``.weights.h5`` file before Keras or h5py read any of its data.

HDF5 can make a dataset's values come from elsewhere or from nothing:

- external storage (the values are read from another file, e.g. ``/etc/passwd``);
- virtual datasets (mapped from datasets in other files);
- soft and external links (an external link opens another HDF5 file);
- fill values and compression: a dataset declares its shape, and a chunked dataset whose chunks
  were never written (or compress a thousandfold) reads as gigabytes from a few kilobytes.

Keras writes none of these: only groups, hard links and contiguous datasets whose bytes are in
the file. ``check_h5`` refuses every file that uses them (``UnsafeArtifactError``), and one whose
datasets declare more bytes in all than the file holds. It reads only HDF5's metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UnsafeArtifactError
from ..frameworks.keras import require


def check_h5(path: Path) -> None:
    """Refuse an HDF5 file that reads data from elsewhere or declares more than it holds."""
    h5py = require("h5py", "Reading .weights.h5 files")
    size = Path(path).stat().st_size
    problems: list[str] = []
    declared = 0

    def link(name: str, info: Any) -> None:
        if isinstance(info, (h5py.SoftLink, h5py.ExternalLink)):
            target = getattr(info, "filename", None) or getattr(info, "path", "")
            problems.append(f"{name} is a {type(info).__name__} to {target!r}")

    def item(name: str, obj: Any) -> None:
        nonlocal declared
        if not isinstance(obj, h5py.Dataset):
            return
        if obj.external:
            problems.append(f"the dataset {name} reads its values from {obj.external[0][0]!r}")
        elif obj.is_virtual:
            problems.append(f"the dataset {name} is virtual (mapped from other files)")
        declared += obj.size * obj.dtype.itemsize

    with h5py.File(path, "r") as fh:
        fh.visititems_links(link)
        if not problems:
            fh.visititems(item)
    if not problems and declared > size:
        problems.append(
            f"its datasets declare {declared:,} bytes, more than the {size:,}-byte file holds "
            "(fill values or compression)"
        )
    if problems:
        raise UnsafeArtifactError(
            f"{Path(path).name} is not a weights file as Keras writes it: {'; '.join(problems[:3])}. "
            "Loading it would read other files or fill memory; it was crafted. Export the "
            "weights again from the model."
        )
