"""Checks shared by the reliability tests: what a destination folder may hold after a fault."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jupyter_modelsave as jms
from jupyter_modelsave.core import artifacts, hashing

REPO = Path(__file__).resolve().parents[2]


def run_child(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> list[dict]:
    """Run ``tests/reliability/_writer_child.py`` with ``args``; its JSON lines, parsed."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.reliability._writer_child", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def visible(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def temporaries(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if artifacts.TMP_MARK in n)


_LOADED: set[str] = set()  # contents already loaded once: the same bytes load the same


def check_whole(artifact: Path, allowed: set[str]) -> str:
    """``artifact`` holds one of the ``allowed`` contents, agrees with its manifest when it has
    one, and loads. Returns "complete" (with manifest) or "unlisted" (artifact only)."""
    actual = hashing.sha256_of(artifact)
    assert actual in allowed, f"{artifact} is not one whole version (sha256 {actual[:12]})"
    manifest = Path(f"{artifact}.json")
    if actual not in _LOADED:
        jms.load(artifact, trusted=True)  # checks the manifest's sha256 first, when there is one
        _LOADED.add(actual)
    if not manifest.exists():
        return "unlisted"
    assert json.loads(manifest.read_text())["sha256"] == actual
    return "complete"


def check_destination(folder: Path, allowed: set[str], must_exist: Path | None = None) -> str:
    """After a fault: the folder holds nothing but whole artifacts, their manifests and hidden
    temporaries. Returns the state: "absent", "unlisted" or "complete"."""
    names = visible(folder)
    hidden = [n for n in os.listdir(folder) if n.startswith(".")]
    assert all(artifacts.TMP_MARK in n for n in hidden), hidden
    artifacts_here = [n for n in names if not n.endswith(".json")]
    orphans = [n for n in names if n.endswith(".json") and n[: -len(".json")] not in names]
    assert not orphans, f"manifests without their artifact: {orphans}"
    assert len(artifacts_here) <= 1, names
    if must_exist is not None:
        assert artifacts_here == [must_exist.name], f"{must_exist.name} is gone: {names}"
    if not artifacts_here:
        return "absent"
    return check_whole(folder / artifacts_here[0], allowed)


def shas(record: dict[str, Any]) -> set[str]:
    return {record["new_sha"], record["old_sha"]}


def check_killed_writes(records: list[dict]) -> dict[tuple[str, str], set[str]]:
    """Check each killed writer's folder (``check_destination``): a new name is absent or whole,
    an overwritten path holds the old or the new version. Returns the states seen per
    (scenario, copy mode)."""
    states: dict[tuple[str, str], set[str]] = {}
    for r in records:
        fresh = r["scenario"] == "fresh"
        state = check_destination(
            Path(r["folder"]),
            {r["new_sha"]} if fresh else {r["new_sha"], r["old_sha"]},
            must_exist=Path(r["target"]) if r["scenario"] == "overwrite" else None,
        )
        states.setdefault((r["scenario"], r["mode"]), set()).add(state)
    return states
