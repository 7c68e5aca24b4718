"""Run a notebook of code cells in a real kernel (nbclient) and read its outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook


def run_cells(folder: Path, cells: list[str], error_cells: tuple[int, ...] = ()) -> list:
    """Execute ``cells`` in a fresh python3 kernel started in ``folder``; return the cells.

    Cells whose index is in ``error_cells`` may raise (tagged ``raises-exception``).
    """
    nb = new_notebook(cells=[new_code_cell(src) for src in cells])
    for i in error_cells:
        nb.cells[i].metadata["tags"] = ["raises-exception"]
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": folder}}
    ).execute()
    nbformat.validate(nb)
    return nb.cells


def html(cell) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)


def text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
