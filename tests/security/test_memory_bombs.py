"""A small untrusted file cannot grow the process by more than 64 MiB + 8 x its size.

Issue 14, finding 4 (a 100-byte ONNX graph that ONNX Runtime's constant folding expands to
gigabytes at session creation) and its siblings: other constant-folded ops, sparse tensors
(made dense at load), deflated ``torch.save`` zips, pickles of many tiny objects, a safetensors
header that declares 1 GiB. Each is replayed through ``load``, ``load`` beside a manifest with
the right sha256, ``load_into`` and ``from_base64``, and its peak RSS growth is recorded and held
to the bound (``conftest.hostile_load``; the worst is printed at the end of the run).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import jupyter_modelsave as jms

from .. import models
from ._hostile import (
    ONNX_BOMBS,
    PICKLE_BOMBS,
    constant_folded,
    deflated_checkpoint,
    deflated_state_dict,
    onnx_external_data,
    pickle_bomb,
    safetensors_declaring,
    string_of,
    with_manifest,
)

REFUSED = (jms.UnsafeArtifactError, jms.IntegrityError)

LOADERS: dict[str, Callable[[Path, str], object]] = {
    "load": lambda p, fmt: jms.load(p),
    "load, manifest with the right sha256": lambda p, fmt: jms.load(with_manifest(p, fmt)),
    "load_into": lambda p, fmt: jms.load_into(models.mlp(), p),
    "from_base64": lambda p, fmt: jms.from_base64(string_of(p, fmt)),
}


@pytest.fixture(scope="module", autouse=True)
def warm_libraries(tmp_path_factory):
    """Import torch, ONNX Runtime and safetensors and open one session of each kind first, so
    that what is measured is the load, not the first import."""
    import torch

    folder = tmp_path_factory.mktemp("warm")
    jms.load(jms.export(models.mlp(), folder, torch.randn(2, 8), exporter="torchscript"))
    jms.load(jms.export(models.mlp(), folder, format="safetensors"))
    jms.load(jms.export(models.mlp(), folder, format="state_dict"))


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("bomb", list(ONNX_BOMBS))
def test_an_onnx_memory_bomb_stays_within_the_bound(bomb, loader, hostile_load, tmp_path):
    # Given a tiny ONNX file that declares or computes 1 GiB
    path = ONNX_BOMBS[bomb](tmp_path / "model.onnx")
    assert path.stat().st_size < 1000
    # When it is loaded untrusted, then memory stays within the bound
    error = hostile_load(lambda: LOADERS[loader](path, "onnx"), path)
    # and it is refused (sparse tensors, data that is not there) or opened without folding
    if "sparse" in bomb or "without its data" in bomb:
        assert isinstance(error, REFUSED), repr(error)
    elif loader == "load_into":
        assert isinstance(error, jms.InvalidOptionError)  # ONNX holds no state dict
    else:
        assert error is None


def test_only_untrusted_onnx_files_lose_constant_folding(tmp_path):
    """A trusted session is ORT's usual one: it folds the constant (128 MiB here) at load."""
    from ._memory import can_measure, peak_growth

    if not can_measure():
        pytest.skip("needs Linux /proc/self/clear_refs")
    path = constant_folded("Expand", 2**25)(tmp_path / "model.onnx")
    _, untrusted = peak_growth(lambda: jms.load(path))
    _, trusted = peak_growth(lambda: jms.load(path, trusted=True))
    assert untrusted < 32 * 2**20 < 100 * 2**20 < trusted


@pytest.fixture(scope="module")
def deflated(tmp_path_factory) -> dict[str, Path]:
    """Built once (deflating 256 MiB takes seconds); each test loads its own copy."""
    folder = tmp_path_factory.mktemp("deflated")
    return {"state_dict": deflated_state_dict(folder / "state.pt"),
            "checkpoint": deflated_checkpoint(folder / "ckpt.pt")}  # fmt: skip


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("fmt", ["state_dict", "checkpoint"])
def test_a_deflated_torch_file_is_refused_before_it_expands(
    fmt, loader, deflated, hostile_load, tmp_path
):
    # Given 256 MiB of tensor data deflated into a ~260 KB torch.save zip
    path = tmp_path / "weights.pt"
    path.write_bytes(deflated[fmt].read_bytes())
    assert path.stat().st_size < 2**20
    # When it is loaded untrusted, then it is refused without expanding it
    error = hostile_load(lambda: LOADERS[loader](path, fmt), path)
    assert isinstance(error, jms.UnsafeArtifactError) and "compressed" in str(error)


@pytest.mark.parametrize("loader", ["load", "load_into", "from_base64"])
@pytest.mark.parametrize("kind", list(PICKLE_BOMBS))
def test_a_pickle_of_many_tiny_objects_is_refused(kind, loader, hostile_load, tmp_path):
    # Given a 1-3 MB torch.save zip whose pickle creates 180-230 MiB of Python objects
    path = pickle_bomb(tmp_path / "weights.pt", kind)
    # When it is loaded untrusted, then it is refused before it is unpickled
    error = hostile_load(lambda: LOADERS[loader](path, "state_dict"), path)
    assert isinstance(error, jms.UnsafeArtifactError) and "creates objects" in str(error)


@pytest.mark.slow  # torch's pure-Python unpickler takes 5-10 s on each
@pytest.mark.parametrize("kind", list(PICKLE_BOMBS))
def test_the_pickle_bombs_are_real(kind, tmp_path):
    """``torch.load(weights_only=True)``, which loaded untrusted files before, does grow the
    process past the bound on each (so the check is what keeps the bound)."""
    import torch

    from ._memory import can_measure, peak_growth

    if not can_measure():
        pytest.skip("needs Linux /proc/self/clear_refs")
    path = pickle_bomb(tmp_path / "weights.pt", kind)
    _, growth = peak_growth(lambda: torch.load(path, weights_only=True))
    assert growth > jms.core.limits.memory_bound(path.stat().st_size)


def test_a_big_legitimate_state_dict_is_not_refused(tmp_path):
    """The pickle cost counts what unpickling allocates: 10,000 small tensors load untrusted."""
    import torch

    state = {f"layer{i}.weight": torch.ones(8) for i in range(10_000)}
    path = tmp_path / "many.pt"
    torch.save(state, path)
    assert set(jms.load(path)) == set(state)


@pytest.mark.parametrize("loader", ["load", "load, manifest with the right sha256", "from_base64"])
def test_a_safetensors_header_declaring_1_gib_is_refused(loader, hostile_load, tmp_path):
    path = safetensors_declaring(tmp_path / "model.safetensors")
    error = hostile_load(lambda: LOADERS[loader](path, "safetensors"), path)
    assert isinstance(error, jms.IntegrityError)


@pytest.mark.parametrize(
    "location", ["/etc/passwd", "../secret.bin", "link.bin"], ids=["absolute", "parent", "symlink"]
)
def test_onnx_external_data_outside_the_folder_is_never_read(location, hostile_load, tmp_path):
    # Given a folder ONNX artifact whose external data names a file outside it
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"SECRET-SECRET-16")
    folder = onnx_external_data(tmp_path / "model.onnx", location)
    if location == "link.bin":
        (folder / "link.bin").symlink_to(secret)
    # When it is loaded (beside a manifest that matches), then ORT refuses it
    error = hostile_load(lambda: jms.load(with_manifest(folder, "onnx")), folder)
    assert isinstance(error, jms.IntegrityError), repr(error)


@pytest.mark.parametrize("kind", ["20 MB", "a FIFO", "nested 100000 deep"])
def test_a_huge_or_blocking_manifest_is_refused_without_reading_it(kind, hostile_load, tmp_path):
    import os

    from ..reliability._guards import no_hang

    path = jms.export(models.mlp(), tmp_path, format="safetensors")
    manifest = Path(f"{path}.json")
    manifest.unlink()
    if kind == "a FIFO":
        os.mkfifo(manifest)
    elif kind == "20 MB":
        manifest.write_text('{"sha256": "' + "0" * 20_000_000 + '"}')
    else:
        manifest.write_text("[" * 100_000 + "]" * 100_000)
    with no_hang(20):
        error = hostile_load(lambda: jms.load(path), path)
    assert isinstance(error, jms.IntegrityError) and "manifest" in str(error)
