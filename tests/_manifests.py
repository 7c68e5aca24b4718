"""A minimal jupyter_modelsave manifest beside a test file or folder, so the download route
(``_served.written_artifact``) treats it as a written artifact."""

from __future__ import annotations

import json
from pathlib import Path

from jupyter_modelsave.core.hashing import file_hashes, sha256_of


def write_manifest(artifact: Path) -> Path:
    """Write ``<artifact>.json`` naming the producer, the sha256 and the files; return it."""
    manifest = Path(f"{artifact}.json")
    body = {
        "producer": "jupyter_modelsave",
        "sha256": sha256_of(artifact),
        "files": file_hashes(artifact),
    }
    manifest.write_text(json.dumps(body))
    return manifest
