"""Concurrency: two stages/writes of the same model to one destination at once, in threads and
in processes, end with two whole versions or one plus ArtifactExistsError, never a mixed file;
writers of one name into one folder get distinct versions (eight processes at once).

The writers are made to collide: each waits, after copying its bytes and so after every check
that the name is free, until the other has copied too; then both commit. Overwriting writers
also pause between renaming the artifact and its manifest, the moment another writer could slip
in. Folder artifacts (sharded safetensors) are raced as well as single files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import jupyter_modelsave as jms

from ._destination import REPO, check_whole, temporaries, visible
from ._writer_child import FORMATS, racing, stage, tiny_model

KINDS = ("safetensors", "safetensors_sharded")  # a file artifact and a folder artifact
# (stagger, widen) of the two overwriting writers: the first swaps its artifact first and pauses
# before its manifest long enough for the second to swap and rename its own, were there no lock
TIMINGS = ((0.0, 0.3), (0.1, 0.0))
# scenario -> (destination under the folder, seeds of the two writers, overwrite)
SCENARIOS = {
    "folder, same content": ("", (0, 0), False),
    "folder, different content": ("", (0, 1), False),
    "same path": ("model", (0, 1), False),
    "same path, overwrite": ("model", (0, 1), True),
}


def destination(folder: Path, kind: str, scenario: str) -> str:
    name = SCENARIOS[scenario][0]
    return f"{folder}/" if not name else str(folder / f"{name}{_extension(kind)}")


def _extension(kind: str) -> str:
    return ".onnx" if FORMATS[kind]["format"] == "onnx" else f".{FORMATS[kind]['format']}"


def check_outcome(folder: Path, scenario: str, results: list[dict[str, Any]]) -> None:
    """What two racing writers may leave: whole artifacts with their manifests, nothing else."""
    ok = [r for r in results if r["error"] is None]
    refused = [r for r in results if r["error"] is not None]
    assert all(r["error"] == "ArtifactExistsError" for r in refused), refused
    assert temporaries(folder) == []
    written = [n for n in visible(folder) if not n.endswith(".json")]
    assert sorted(visible(folder)) == sorted([*written, *(f"{n}.json" for n in written)])
    for name in written:
        assert check_whole(folder / name, {r["sha"] for r in results}) == "complete"
    if scenario.startswith("folder"):  # the version is picked under the lock: one each
        assert (
            len(ok) == 2
            and len(written) == 2
            and {r["path"] for r in ok} == {str(folder / n) for n in written}
        )
        assert sorted(_version(folder / n) for n in written) == ["1.0.0", "1.0.1"]
    elif scenario == "same path, overwrite":  # both replaced it; the last one is whole
        assert len(ok) == 2 and len(written) == 1
    else:  # one path for both: one writes it, the other is told
        assert len(ok) == 1 and len(refused) == 1 and written == [Path(ok[0]["path"]).name]
        assert (
            "another writer" in refused[0]["message"] or "already exists" in refused[0]["message"]
        )
        assert check_whole(folder / written[0], {ok[0]["sha"]}) == "complete"


def _version(artifact: Path) -> str:
    """The version in the manifest, which must be the one in the name."""
    version = json.loads(Path(f"{artifact}.json").read_text())["version"]
    assert f"_v{version}_" in artifact.name
    return version


# --- threads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("kind", KINDS)
def test_two_threads_staging_and_writing_at_once(tmp_path, kind, scenario):
    # Given two threads that each stage the model and write it to the same destination
    _, seeds, overwrite = SCENARIOS[scenario]
    dest = destination(tmp_path, kind, scenario)
    barrier = threading.Barrier(2, timeout=60)
    models = {seed: tiny_model(seed) for seed in seeds}  # one model object per content
    results: list[dict[str, Any]] = []

    def writer(seed: int) -> None:
        staged = stage(kind, seed, models[seed])
        try:
            path = staged.write(dest, overwrite=overwrite)
            results.append({"path": str(path), "sha": staged.sha256, "error": None})
        except jms.ArtifactExistsError as err:
            results.append({"path": None, "sha": staged.sha256, "error": type(err).__name__,
                            "message": str(err)})  # fmt: skip
        finally:
            staged.discard()

    timing = dict(zip(("first", "second"), TIMINGS if overwrite else ((0, 0), (0, 0))))
    # When both write at once
    with racing(barrier.wait, lambda: timing[threading.current_thread().name]):
        threads = [
            threading.Thread(target=writer, args=(s,), name=n) for s, n in zip(seeds, timing)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    # Then two whole versions, or one and a clear ArtifactExistsError
    assert len(results) == 2, "a writer raised something other than ArtifactExistsError"
    check_outcome(tmp_path, scenario, results)


# --- processes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def process_race(tmp_path_factory):
    """Two processes run every (kind, scenario) in turn, colliding at each."""
    root = tmp_path_factory.mktemp("race")
    plans: list[list[dict[str, Any]]] = [[], []]
    for kind in KINDS:
        for scenario, (_, seeds, overwrite) in SCENARIOS.items():
            folder = root / kind / scenario.replace(" ", "_").replace(",", "")
            timings = TIMINGS if overwrite else ((0, 0), (0, 0))
            for plan, seed, (stagger, widen) in zip(plans, seeds, timings):
                plan.append({
                    "name": f"{kind}/{scenario}", "format": kind, "seed": seed,
                    "dest": destination(folder, kind, scenario), "overwrite": overwrite,
                    "barrier": str(folder.parent / f"{folder.name}.barrier"),
                    "stagger": stagger, "widen": widen,
                })  # fmt: skip
    procs = []
    for i, plan in enumerate(plans):
        (root / f"plan{i}.json").write_text(json.dumps(plan))
        command = [sys.executable, "-m", "tests.reliability._writer_child", "race"]
        procs.append(
            subprocess.Popen(
                [*command, str(root / f"plan{i}.json"), "2"],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results: dict[str, list[dict[str, Any]]] = {}
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-4000:]
        for line in out.splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                results.setdefault(record["step"], []).append(record)
    return root, results


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("kind", KINDS)
def test_two_processes_staging_and_writing_at_once(process_race, kind, scenario):
    root, results = process_race
    folder = root / kind / scenario.replace(" ", "_").replace(",", "")
    # Then two whole versions, or one and a clear ArtifactExistsError, never a mixed file
    assert len(results[f"{kind}/{scenario}"]) == 2
    check_outcome(folder, scenario, results[f"{kind}/{scenario}"])


@pytest.mark.slow
def test_eight_processes_writing_one_name_get_distinct_versions(tmp_path):
    """Issue 14, finding 11: all eight once got 1.0.0."""
    # Given eight processes that stage different weights and write them under one name at once
    folder, writers = tmp_path / "out", 8
    procs = []
    for seed in range(writers):
        plan = tmp_path / f"plan{seed}.json"
        plan.write_text(json.dumps([{
            "name": "race", "format": "safetensors", "seed": seed, "dest": f"{folder}/",
            "overwrite": False, "barrier": str(tmp_path / "barrier"), "stagger": 0, "widen": 0,
        }]))  # fmt: skip
        command = [sys.executable, "-m", "tests.reliability._writer_child", "race", str(plan)]
        procs.append(subprocess.Popen([*command, str(writers)], cwd=REPO, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-4000:]
        results += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    # Then each wrote its own artifact, with its own version, in its name and its manifest
    assert [r["error"] for r in results] == [None] * writers
    written = [n for n in visible(folder) if not n.endswith(".json")]
    assert len(written) == writers and temporaries(folder) == []
    versions = sorted((_version(folder / n) for n in written), key=lambda v: int(v.split(".")[2]))
    assert versions == [f"1.0.{i}" for i in range(writers)]
