"""Hostile artifacts through the sidebar's routes: the server hands their bytes over and never
opens them.

An attacker who can put files under the Jupyter root (a shared folder, a cloned repository) can
also put a manifest with the true sha256 and a made-up signature beside each, so the download
route serves them (``_served.written_artifact``). Serving must stay a byte copy: no code of the
artifact runs in the server, no loader reads it, and the server's memory grows by no more than
the bound untrusted loads have (``core/limits.memory_bound``), gzip compression included.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from jupyter_modelsave.core.hashing import size_of
from jupyter_modelsave.core.limits import memory_bound

from . import _hostile as hostile
from ._memory import CLEAR_REFS, _status_kb, _trim, can_measure
from .conftest import RECORDS

MARKER = "code_ran"
PICKLE_BOMB = next(iter(hostile.PICKLE_BOMBS))

# (file name, format recorded in the attacker's manifest, builder(dest, marker))
ARTIFACTS: dict[str, tuple[str, str, Callable[[Path, Path], Path]]] = {
    "onnx constant folding": ("bomb.onnx", "onnx", lambda d, _: hostile.constant_folded("Expand")(d)),
    "onnx sparse": ("sparse.onnx", "onnx", lambda d, _: hostile.onnx_sparse_initializer(d)),
    "torchscript __setstate__": ("code.pt", "torchscript", hostile.torchscript_running_code),
    "pickle bomb": ("bomb.pt", "state_dict", lambda d, _: hostile.pickle_bomb(d, PICKLE_BOMB)),
    "deflated state dict": ("deflated.pt", "state_dict", lambda d, _: hostile.deflated_state_dict(d)),
    "safetensors header": ("header.safetensors", "safetensors", lambda d, _: hostile.safetensors_declaring(d)),
    "weights.h5 fill value": ("fill.weights.h5", "weights", lambda d, _: hostile.h5_fill_value(d)),
    ".keras config": ("bomb.keras", "keras", lambda d, _: hostile.keras_config_bomb(d)),
}  # fmt: skip


async def _peak_growth(call) -> tuple[object, int]:
    """(the awaited result, the peak RSS growth of this process, server included, meanwhile)."""
    _trim()
    CLEAR_REFS.write_text("5")
    start = _status_kb("VmRSS")
    result = await call()
    return result, max(_status_kb("VmHWM") - start, 0) * 1024


@pytest.mark.parametrize("gzip", [False, True], ids=["identity", "gzip"])
@pytest.mark.parametrize("kind", ARTIFACTS)
async def test_a_hostile_artifact_is_served_as_bytes_and_never_opened(
    kind, gzip, http_server_client, jp_base_url, jp_auth_header, jp_root_dir, request
):
    if not can_measure():
        pytest.skip("needs Linux /proc/self/clear_refs to measure peak memory")
    if kind.endswith(("h5 fill value", ".keras config")):
        pytest.importorskip("h5py")
    # Given an attacker's artifact in a shared folder, with a manifest of the true sha256 and a
    # made-up signature beside it
    name, fmt, build = ARTIFACTS[kind]
    folder = jp_root_dir / "shared"
    folder.mkdir(exist_ok=True)
    marker = jp_root_dir / MARKER
    path = build(folder / name, marker)
    hostile.with_manifest(path, fmt, hostile.forged_signature(path))
    # When the browser downloads it (as the sidebar's Download does)
    headers = {**jp_auth_header, "Accept-Encoding": "gzip" if gzip else "identity"}
    response, growth = await _peak_growth(
        lambda: http_server_client.fetch(
            f"{jp_base_url}modelsave/download/shared/{name}", headers=headers
        )
    )
    # Then it gets the very bytes (the route's own sha256 says so), no code ran, and the server
    # grew within the untrusted-load bound
    assert response.code == 200
    assert (
        hashlib.sha256(response.body).hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
    )
    assert response.headers["X-Content-SHA256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not marker.exists()
    bound = memory_bound(size_of(path))
    RECORDS.append((request.node.nodeid.split("::", 1)[-1], growth, size_of(path), bound))
    assert growth <= bound, f"serving {name} grew the server by {growth:,} bytes (bound {bound:,})"
