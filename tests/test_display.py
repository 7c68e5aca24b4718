"""One size formatter for every surface: the Python one is the file browser's ``formatFileSize``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from jupyter_modelsave._display import human_size

LISTING = Path(__file__).parents[1] / "node_modules/@jupyterlab/filebrowser/lib/listing.js"
SIZES = [0, 1, 999, 1000, 1023, 1024, 1075, 1126, 1280, 1536, 2048, 10**6, 1048575, 1048576,
         42_940, 102_400_000, 97 * 1024**2 + 52_429, 5 * 10**9, 1024**3, 1024**3 - 1, 1024**4 * 3,
         2**53 - 1]  # fmt: skip


def test_sizes_read_like_the_file_browser():
    assert human_size(102_400_000) == "97.7 MB"
    assert human_size(1536) == "1.5 KB"
    assert human_size(2048) == "2 KB"
    assert human_size(1280) == "1.3 KB"  # a tie rounds up, as JavaScript's toFixed does
    assert human_size(0) == "0 B" and human_size(999) == "999 B"


@pytest.mark.skipif(
    shutil.which("node") is None or not LISTING.exists(), reason="needs node and node_modules"
)
def test_python_and_jupyterlab_format_every_size_alike():
    # Given JupyterLab's own formatFileSize, taken from the installed @jupyterlab/filebrowser
    source = re.search(r"export (function formatFileSize\(.*?\n\})", LISTING.read_text(), re.S)
    assert source, (
        "formatFileSize moved in @jupyterlab/filebrowser: update jupyter_modelsave._display"
    )
    call = f"{json.dumps(SIZES)}.map(b => formatFileSize(b, 1, 1024))"
    script = f"{source.group(1)}\nconsole.log(JSON.stringify({call}))"
    # When both format the same sizes, Then they agree on every one
    out = subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True)
    assert [human_size(s) for s in SIZES] == json.loads(out.stdout)
