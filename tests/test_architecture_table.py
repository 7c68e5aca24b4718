"""The README's architecture table is what ``scripts/architecture_table.py`` produces.

Re-staging every architecture takes minutes, so the test re-runs the cheap row (the GRU tagger,
every format and opset) and checks the README's row equals it, and that the README's tables
have the script's columns and one row per architecture. After a change to exporters, run
``.venv/bin/python scripts/architecture_table.py --readme``.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = runpy.run_path(str(ROOT / "scripts" / "architecture_table.py"), run_name="table")


@pytest.fixture(scope="module")
def readme_table() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start, end = text.index(SCRIPT["START"]), text.index(SCRIPT["END"])
    return [line for line in text[start:end].splitlines() if line.startswith("|")]


def test_the_readme_row_of_the_gru_tagger_is_what_the_script_measures(readme_table):
    # Given the script's row, measured now by staging the GRU tagger in every column
    measured = SCRIPT["row"](SCRIPT["architectures"].BY_NAME["GRU tagger"])
    # Then the README holds exactly that row
    assert measured in readme_table


def test_the_readme_tables_have_the_scripts_columns_and_every_architecture(readme_table):
    architectures = SCRIPT["architectures"].ARCHITECTURES
    heads = {
        framework: "| architecture | "
        + " | ".join(h for h, _ in SCRIPT["columns"](framework))
        + " |"
        for framework in ("torch", "keras")
    }
    assert heads["torch"] in readme_table and heads["keras"] in readme_table
    names = [line.split("|")[1].strip() for line in readme_table if not line.startswith("|--")]
    assert sorted(n for n in names if n != "architecture") == sorted(a.name for a in architectures)
