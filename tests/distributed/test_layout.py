"""The pieces of a sharded export that need no process group: byte runs, layout, options."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import jupyter_modelsave as jms
from jupyter_modelsave.core.distributed import is_sharded
from jupyter_modelsave.core.distributed._collective import (
    DEFAULT_TIMEOUT_S,
    TIMEOUT_ENV,
    _remote_error,
    as_model_save_error,
    check_timeout,
)
from jupyter_modelsave.core.distributed._layout import element_runs, plan_layout
from jupyter_modelsave.core.formats._safetensors_writer import save_file
from jupyter_modelsave.core.formats.safetensors_format import _header
from jupyter_modelsave.core.frameworks.torch import sharding_note

from . import _models as models


def random_chunk(rng: random.Random, shape: tuple[int, ...]) -> tuple[tuple, tuple]:
    offsets, sizes = [], []
    for size in shape:
        start = rng.randrange(size + 1)
        offsets.append(start)
        sizes.append(rng.randrange(size - start + 1))
    return tuple(offsets), tuple(sizes)


def test_element_runs_place_every_element_of_any_block_where_numpy_puts_it():
    rng = random.Random(0)
    for _ in range(300):
        shape = tuple(rng.randrange(1, 5) for _ in range(rng.randrange(0, 4)))
        offsets, sizes = random_chunk(rng, shape)
        chunk = np.arange(1, int(np.prod(sizes)) + 1).reshape(sizes)
        expected = np.zeros(shape, dtype=np.int64)
        expected[tuple(slice(o, o + s) for o, s in zip(offsets, sizes))] = chunk
        flat = np.zeros(int(np.prod(shape)), dtype=np.int64)
        for full, local, count in element_runs(shape, offsets, sizes):
            flat[full : full + count] = chunk.reshape(-1)[local : local + count]
        assert np.array_equal(flat.reshape(shape), expected), (shape, offsets, sizes)


def test_row_blocks_are_one_run_and_column_blocks_one_run_per_row():
    assert list(element_runs((6, 4), (2, 0), (3, 4))) == [(8, 0, 12)]  # FSDP's Shard(0)
    assert list(element_runs((3, 4), (0, 2), (3, 2))) == [(2, 0, 2), (6, 2, 2), (10, 4, 2)]


def test_layout_headers_and_offsets_are_the_single_process_writers(tmp_path):
    state = models.mlp(0).state_dict()
    layout = plan_layout({n: (tuple(t.shape), t.dtype) for n, t in state.items()}, {}, {}, 10**9)
    (file,) = layout.files
    written = save_file(
        state, tmp_path / "f.safetensors", _header(state, {"aliases": {}, "metadata": {}})
    )
    data = (tmp_path / "f.safetensors").read_bytes()
    assert data.startswith(layout.headers[file]) and len(data) == layout.sizes[file] == written.size
    for name, place in layout.places.items():
        raw = state[name].contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        assert data[place.start : place.start + place.nbytes] == raw


def test_timeout_option_then_environment_then_default(monkeypatch):
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert check_timeout(None) == DEFAULT_TIMEOUT_S
    monkeypatch.setenv(TIMEOUT_ENV, "42.5")
    assert check_timeout(None) == 42.5
    assert check_timeout(3) == 3.0
    for bad in (0, -1, float("nan"), float("inf"), True, "10", [1]):
        with pytest.raises(jms.InvalidOptionError, match="timeout"):
            check_timeout(bad)
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    with pytest.raises(jms.InvalidOptionError, match=TIMEOUT_ENV):
        check_timeout(None)


def test_other_ranks_raise_the_failing_ranks_error_class():
    error = _remote_error(1, ("ArtifactExistsError", "x.safetensors already exists", None))
    assert isinstance(error, jms.ArtifactExistsError) and error.rank == 1
    assert "rank 1 failed" in str(error)
    disk = _remote_error(2, ("WriteError", "disk full", 28))
    assert isinstance(disk, jms.WriteError) and disk.errno == 28
    foreign = _remote_error(0, ("ZeroDivisionError", "boom", None))  # not a jms error class
    assert type(foreign) is jms.ExportError
    assert isinstance(as_model_save_error(OSError(13, "Permission denied")), jms.WriteError)
    assert isinstance(as_model_save_error(RuntimeError("x")), jms.ExportError)


def test_plain_models_and_other_objects_are_not_sharded():
    assert not is_sharded(models.mlp())
    assert not is_sharded("not a model")
    assert sharding_note(list(models.mlp().parameters())) is None
    assert jms.find_models({"net": models.mlp()})[0].sharding is None
