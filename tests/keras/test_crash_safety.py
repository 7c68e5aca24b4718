"""Crash safety for the Keras formats: a writer killed (SIGKILL) anywhere in a write leaves the
destination absent or whole. The same child as tests/reliability/test_crash_safety.py
(``_writer_child crash``), run with ``JMS_CRASH_FRAMEWORK=keras``."""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

from ..reliability._destination import check_killed_writes, run_child
from ..reliability._writer_child import (
    FOLDER_FORMATS,
    FOLDER_SCENARIOS,
    KERAS_FORMATS,
    MODES,
    SCENARIOS,
)

SEED = 20261123
POINTS = 3


@pytest.fixture(scope="module")
def crashes():
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="jms-crash-keras-", dir=shm if shm.is_dir() else None))
    (root / "staging").mkdir()
    env = {"TMPDIR": str(root / "staging"), "JMS_CRASH_FRAMEWORK": "keras",
           "TF_CPP_MIN_LOG_LEVEL": "3"}  # fmt: skip
    records = run_child("crash", str(root / "out"), str(SEED), str(POINTS), "0", env=env)
    by_format = defaultdict(list)
    for r in records:
        by_format[r["format"]].append(r)
    yield by_format
    shutil.rmtree(root, ignore_errors=True)


def test_every_keras_format_was_killed_mid_write(crashes):
    cases = {(f, r["mode"], r["scenario"], r["status"]) for f, rs in crashes.items() for r in rs}
    assert cases == {
        (f, m, s, "signal 9")
        for f in KERAS_FORMATS
        for m in MODES
        for s in (FOLDER_SCENARIOS if f in FOLDER_FORMATS else SCENARIOS)
    }


@pytest.mark.parametrize("fmt", list(KERAS_FORMATS))
def test_a_killed_keras_write_leaves_the_destination_absent_or_whole(crashes, fmt):
    # Given writers of this Keras format killed at sampled points of a write
    # Then a new name is absent or whole (it loads); an overwritten path holds a whole version
    states = check_killed_writes(crashes[fmt])
    for mode in MODES:  # the sample reached both ends of the write
        assert {"absent", "complete"} <= states["fresh", mode], states
