"""``jms.list_artifacts`` never raises on what a folder holds: one crafted manifest is skipped and
named in ``problems``, and the other artifacts are still listed (issue 14, finding 5)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import jupyter_modelsave as jms

from .. import models
from ..reliability._guards import no_hang

# name -> the text of a manifest that claims to be jupyter_modelsave's
GOOD = {"producer": "jupyter_modelsave", "name": "m", "version": "1.0.0", "format": "onnx",
        "sha256": "0" * 64, "size_bytes": 10, "created": "2026-01-01T00:00:00+00:00",
        "parity": {"passed": True}}  # fmt: skip
CRAFTED: dict[str, str | bytes] = {
    "version abc": json.dumps({**GOOD, "version": "abc"}),
    "version with unicode digits": json.dumps({**GOOD, "version": "\u0661.\u0660.\u0660"}),
    "version with a 5000-digit part": json.dumps({**GOOD, "version": "9" * 5000 + ".0.0"}),
    "version of 2500 parts": json.dumps({**GOOD, "version": "1." * 2500 + "1"}),
    "version a number": json.dumps({**GOOD, "version": 1}),
    "size Infinity": json.dumps({**GOOD, "size_bytes": float("inf")}),
    "size NaN": json.dumps({**GOOD, "size_bytes": float("nan")}),
    "size negative": json.dumps({**GOOD, "size_bytes": -1}),
    "size 1.5": json.dumps({**GOOD, "size_bytes": 1.5}),
    "size a string": json.dumps({**GOOD, "size_bytes": "10"}),
    "size of 5000 digits": json.dumps({**GOOD}).replace('"size_bytes": 10', '"size_bytes": ' + "9" * 5000),
    "size true": json.dumps({**GOOD, "size_bytes": True}),
    "name a list": json.dumps({**GOOD, "name": ["m"]}),
    "created a number": json.dumps({**GOOD, "created": 5}),
    "parity a list": json.dumps({**GOOD, "parity": [True]}),
    "parity passed a string": json.dumps({**GOOD, "parity": {"passed": "yes"}}),
    "nested 100000 deep": '{"producer": "jupyter_modelsave", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "not JSON": "{not json",
    "not UTF-8": b"\xff\xfe{",
    "a JSON list": "[1, 2]",
    "20 MB": json.dumps({**GOOD, "metadata": "x" * 20_000_000}),
}  # fmt: skip


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    """A real artifact, written by jms, in its own folder (copied into each test's folder)."""
    folder = tmp_path_factory.mktemp("real")
    return jms.export(models.mlp(), folder, format="safetensors", name="good")


def _folder_with(tmp_path: Path, real: Path) -> Path:
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / real.name).write_bytes(real.read_bytes())
    (folder / f"{real.name}.json").write_bytes(Path(f"{real}.json").read_bytes())
    return folder


@pytest.mark.parametrize("case", list(CRAFTED))
def test_one_crafted_manifest_is_skipped_and_reported(case, real, tmp_path):
    # Given a folder with a real artifact and a crafted manifest beside a file of its name
    folder = _folder_with(tmp_path, real)
    (folder / "evil.onnx").write_bytes(b"x")
    text = CRAFTED[case]
    (folder / "evil.onnx.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    # When it is listed, then the real one is listed and the crafted one reported
    with no_hang(30):
        found = jms.list_artifacts(folder)
    assert [a.path.name for a in found] == [real.name]
    assert len(found.problems) == 1 and found.problems[0].startswith("evil.onnx.json: ")


def test_a_fifo_or_a_folder_named_like_a_manifest_does_not_block_the_listing(real, tmp_path):
    folder = _folder_with(tmp_path, real)
    for name in ("fifo.onnx", "dir.onnx"):
        (folder / name).write_bytes(b"x")
    os.mkfifo(folder / "fifo.onnx.json")
    (folder / "dir.onnx.json").mkdir()
    with no_hang(30):
        found = jms.list_artifacts(folder)
    assert [a.path.name for a in found] == [real.name]
    assert sorted(p.split(":")[0] for p in found.problems) == ["dir.onnx.json", "fifo.onnx.json"]


def test_other_json_files_are_still_ignored_quietly(real, tmp_path):
    folder = _folder_with(tmp_path, real)
    (folder / "config.json").write_text("{not json")  # no file "config" beside it
    (folder / "data").write_text("x")
    (folder / "data.json").write_text(json.dumps({"producer": "someone else"}))
    found = jms.list_artifacts(folder)
    assert [a.path.name for a in found] == [real.name] and found.problems == []


def test_a_good_listing_is_unchanged(tmp_path):
    # versions, sizes and order as before: newest first, then by version
    model, x = models.mlp(), torch.randn(2, 8)
    paths = [jms.export(model, tmp_path, x, format="state_dict", name="m") for _ in range(3)]
    found = jms.list_artifacts(tmp_path)
    assert found.problems == []
    assert [a.version for a in found] == ["1.0.2", "1.0.1", "1.0.0"]
    assert [a.path for a in found] == paths[::-1]
    assert all(a.size_bytes == p.stat().st_size for a, p in zip(found, paths[::-1]))
