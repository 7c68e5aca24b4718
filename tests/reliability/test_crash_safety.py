"""Crash safety: a writer killed (SIGKILL) anywhere in a write leaves the destination absent or
whole, for every format, and the next write to the folder removes what the dead writer left.

A child process stages each format once (two versions of a tiny model), then forks writers that
kill themselves just before their k-th filesystem call: the destination only changes at such
calls, so the kill points cover the states a crash can leave (a copy is also cut halfway). The
points are a seeded random sample (always with the first and the last); set
``JMS_CRASH_POINTS=0`` to kill at every one. A second child kills a writer that keeps
overwriting one path after seeded random delays. Files go to a tmpfs (/dev/shm) when there is
one: a killed process loses no page cache, so the filesystem does not change the outcome, and
fsync costs nothing there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch

import jupyter_modelsave as jms

from ._destination import (
    check_destination,
    check_killed_writes,
    check_whole,
    run_child,
    temporaries,
    visible,
)
from ._writer_child import FOLDER_FORMATS, FOLDER_SCENARIOS, FORMATS, MODES, SCENARIOS

SEED = 20261123
POINTS = int(os.environ.get("JMS_CRASH_POINTS", "4"))
LOOP_FORMATS = ("onnx_external", "safetensors", "torch_export")
LOOP_ROUNDS = 6
KILLED = "signal 9"


@pytest.fixture(scope="module")
def scratch():
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix="jms-crash-", dir=base))
    (root / "staging").mkdir()  # the children stage here: same filesystem, so writes link
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def records(scratch):
    args = [str(scratch / "out"), str(SEED), str(POINTS), str(LOOP_ROUNDS), *LOOP_FORMATS]
    return run_child("crash", *args, env={"TMPDIR": str(scratch / "staging")})


@pytest.fixture(scope="module")
def crashes(records):
    by_format = defaultdict(list)
    for r in records:
        if r["kind"] == "crash":
            by_format[r["format"]].append(r)
    return by_format


@pytest.fixture(scope="module")
def loop_kills(records):
    return [r for r in records if r["kind"] == "loop"]


def test_every_format_copy_mode_and_scenario_was_killed_mid_write(crashes):
    cases = {(f, r["mode"], r["scenario"]) for f, rs in crashes.items() for r in rs}
    assert cases == {
        (f, m, s)
        for f in FORMATS
        for m in MODES
        for s in (FOLDER_SCENARIOS if f in FOLDER_FORMATS else SCENARIOS)
    }
    statuses = Counter(r["status"] for rs in crashes.values() for r in rs)
    assert statuses == {KILLED: sum(statuses.values())}, statuses


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_killed_write_leaves_the_destination_absent_or_whole(crashes, fmt):
    # Given writers of this format killed at sampled points of a write
    # Then a new name is absent or whole; an overwritten path is the old or the new version
    states = check_killed_writes(crashes[fmt])
    for mode in MODES:  # the sample reached both ends of the write
        assert {"absent", "complete"} <= states["fresh", mode], states


def test_the_next_write_finishes_or_undoes_the_dead_writers_work(crashes):
    # Given the folders of killed writers, many of them holding temporaries
    records = [r for rs in crashes.values() for r in rs]
    littered = [r for r in records if temporaries(Path(r["folder"]))]
    assert len(littered) > len(records) // 3
    sweeper = jms.stage(torch.nn.Linear(2, 2), format="safetensors", name="sweeper")
    try:
        for r in littered:
            folder = Path(r["folder"])
            # When anything is written to the folder
            written = sweeper.write(folder)
            # Then the temporaries are gone, and every artifact has its manifest again: the
            # interrupted write is finished (its artifact was in place) or undone
            assert temporaries(folder) == []
            names = [n for n in visible(folder) if n != written.name and not n.endswith(".json")]
            for name in names:
                assert check_whole(folder / name, {r["new_sha"], r["old_sha"]}) == "complete"
            if r["scenario"] != "fresh":  # the old version is back if the new one is not whole
                assert names == [Path(r["target"]).name]
    finally:
        sweeper.discard()


def test_a_writer_killed_at_random_moments_while_overwriting_leaves_one_whole_version(loop_kills):
    # Given a writer overwriting one path in a loop, alternating two versions, killed at random
    assert {r["format"] for r in loop_kills} == set(LOOP_FORMATS)
    assert all(r["status"] == KILLED for r in loop_kills)
    for r in loop_kills:
        # Then the path always holds one whole version, its manifest (if any) agreeing
        check_destination(
            Path(r["folder"]), {r["new_sha"], r["old_sha"]}, must_exist=Path(r["target"])
        )
