"""Untrusted artifacts: loading runs no pickled code unless ``trusted=True``, refuses any file
that does not match its manifest's sha256, and refuses crafted safetensors headers without
allocating what they declare.

What ``tests/test_loading.py`` already shows is not repeated here: a pickle bomb in a state_dict
or checkpoint ``.pt`` (load, load_into, base64), a .pt2 whose weight is a pickled bomb (load), and a
changed byte in the single-file artifacts of five formats.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import pickle
import struct
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import jupyter_modelsave as jms
from jupyter_modelsave.core import hashing
from jupyter_modelsave.core.transfer import encode

from .. import models
from ._guards import no_hang

REFUSED = (jms.UnsafeArtifactError, jms.IntegrityError)
MB = 2**20


class Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """A written artifact per format of one tiny model, plus the two folder layouts."""
    torch.manual_seed(0)
    mlp, x = models.mlp(), torch.randn(2, 8)
    folder = tmp_path_factory.mktemp("written")
    paths = {
        fmt: jms.stage(mlp, x, format=fmt, name=fmt, parity=False).write(folder)
        for fmt in ("torchscript", "torch_export", "state_dict")
    }
    paths["onnx"] = jms.stage(mlp, x, exporter="torchscript", parity=False).write(folder)
    wide = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Linear(64, 4))  # > 1 KB: external
    paths["onnx folder"] = jms.stage(
        wide, x, exporter="torchscript", parity=False, external_data=True, name="big"
    ).write(folder)
    paths["safetensors shards"] = jms.stage(
        models.SmallCNN(), format="safetensors", max_shard_size=800, name="cnn"
    ).write(folder)
    return paths


def _with_manifest(path: Path, fmt: str) -> Path:
    """An attacker's manifest for ``path``: the right sha256, so only the content can be judged."""
    manifest = {"producer": "jupyter_modelsave", "format": fmt, "sha256": hashing.sha256_of(path)}
    Path(f"{path}.json").write_text(json.dumps(manifest))
    return path


def _rezipped(src: Path, dest: Path, replace: Callable[[str, bytes], bytes]) -> Path:
    """A copy of the zip archive ``src`` with members' bytes passed through ``replace``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, replace(info.filename.split("/", 1)[-1], zin.read(info.filename)))
    return dest


# ------------------------------------------------------------------ pickles run nothing


def _bomb(kind: str, written: dict[str, Path], folder: Path, marker: Path) -> Path:
    payload = Payload(marker)
    if kind == "state_dict .pth":
        path = folder / "weights.pth"
        torch.save({"weight": torch.ones(2), "extra": payload}, path)
    elif kind == "checkpoint":
        path = folder / "ckpt.pt"
        torch.save({"model_state": {"w": torch.ones(2)}, "config": payload, "epoch": 1}, path)
    elif kind.startswith("torchscript"):  # a pickle member of a real TorchScript archive
        member = kind.split(" ", 1)[1]
        bomb = pickle.dumps(payload, protocol=2)
        path = _rezipped(written["torchscript"], folder / "script.pt",
                         lambda name, data: bomb if name == member else data)  # fmt: skip
    else:  # torch_export: a constant switched to a pickled object
        path = _pt2_with_pickled_weight(written["torch_export"], folder / "prog.pt2", payload)
    return path


def _pt2_with_pickled_weight(src: Path, dest: Path, payload: Payload) -> Path:
    with zipfile.ZipFile(src) as z:
        name = next(n for n in z.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(z.read(name))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    replaced = {
        "data/weights/model_weights_config.json": json.dumps(config).encode(),
        f"data/weights/{first['path_name']}": buffer.getvalue(),
    }
    return _rezipped(src, dest, lambda member, data: replaced.get(member, data))


PICKLE_CARRIERS = {
    "state_dict .pth": "state_dict",
    "checkpoint": "checkpoint",
    "torchscript data.pkl": "torchscript",
    "torchscript constants.pkl": "torchscript",
    "torchscript traced_inputs.pkl": "torchscript",
    "torch_export weights": "torch_export",
}
LOADERS = {
    "load": lambda path, fmt: jms.load(path),
    "load with a matching manifest": lambda path, fmt: jms.load(_with_manifest(path, fmt)),
    "load_into": lambda path, fmt: jms.load_into(models.mlp(), path),
    "from_base64": lambda path, fmt: jms.from_base64(encode(path, fmt)),
}


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("kind", list(PICKLE_CARRIERS))
def test_a_pickled_payload_never_runs_without_trust(kind, loader, written, tmp_path):
    # Given an artifact of a pickle-based format that carries code in a pickle
    marker = tmp_path / "pwned"
    path = _bomb(kind, written, tmp_path, marker)
    fmt = PICKLE_CARRIERS[kind]
    # When it is loaded in any way without trusted=True
    try:
        LOADERS[loader](path, fmt)
    except jms.ModelSaveError as err:
        assert isinstance(err, (*REFUSED, jms.StateDictMismatchError)), repr(err)
    # Then the payload never ran
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["state_dict .pth", "checkpoint", "torch_export weights"])
def test_trusted_true_is_what_lets_the_payload_run(kind, written, tmp_path):
    """The payloads above are live: with trust, they run (so the refusals are real)."""
    marker = tmp_path / "ran"
    path = _bomb(kind, written, tmp_path, marker)
    with contextlib.suppress(jms.ModelSaveError):  # torch.export may reject the object later
        jms.load(path, trusted=True)
    assert marker.exists()


def test_torchscript_archives_never_unpickle_python_objects_even_when_trusted(written, tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(jms.IntegrityError, match="cannot be read as a torchscript artifact"):
        jms.load(_bomb("torchscript data.pkl", written, tmp_path, marker), trusted=True)
    assert not marker.exists()


def test_trust_never_skips_the_sha256_check(tmp_path):
    # Given a pickle bomb whose manifest records another sha256
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"w": Payload(marker)}, path)
    Path(f"{path}.json").write_text(json.dumps({"format": "state_dict", "sha256": "0" * 64}))
    # When it is loaded with trust, then it is refused before being opened
    with pytest.raises(jms.IntegrityError, match="does not match its manifest"):
        jms.load(path, trusted=True)
    assert not marker.exists()


# ------------------------------------------------------------------ sha256 per format, folders


def _flip(file: Path, at: float = 0.5) -> None:
    data = bytearray(file.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    file.write_bytes(bytes(data))


def _copy(src: Path, dest: Path) -> Path:
    import shutil

    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copyfile(src, dest)
    shutil.copyfile(f"{src}.json", f"{dest}.json")
    return dest


TAMPERING = {
    "onnx: a changed byte": ("onnx", lambda p: _flip(p)),
    "onnx folder: a changed byte of the external data": (
        "onnx folder", lambda p: _flip(p / "model.onnx.data")),
    "onnx folder: a changed byte of the graph": ("onnx folder", lambda p: _flip(p / "model.onnx")),
    "onnx folder: an extra file": ("onnx folder", lambda p: (p / "extra.bin").write_bytes(b"x")),
    "safetensors shards: a changed byte in one shard": (
        "safetensors shards", lambda p: _flip(sorted(p.glob("model-*"))[-1], 0.99)),
    "safetensors shards: a shard removed": (
        "safetensors shards", lambda p: sorted(p.glob("model-*"))[0].unlink()),
    "safetensors shards: the index changed": (
        "safetensors shards", lambda p: _flip(p / "model.safetensors.index.json", 0.9)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TAMPERING))
def test_an_artifact_that_does_not_match_its_manifest_is_refused(case, written, tmp_path):
    # Given a copy of a written artifact with its manifest, then changed on disk
    kind, tamper = TAMPERING[case]
    copy = _copy(written[kind], tmp_path / written[kind].name)
    jms.load(copy)  # intact, it loads
    tamper(copy)
    # When it is loaded, then the sha256 check refuses it, with or without trust
    for trusted in (False, True):
        with pytest.raises(jms.IntegrityError, match="does not match its manifest"):
            jms.load(copy, trusted=trusted)


@pytest.mark.parametrize(
    "manifest",
    [
        lambda sha: "{not json",
        lambda sha: json.dumps([sha]),
        lambda sha: "null",
        lambda sha: json.dumps({"format": "no_such_format", "sha256": sha}),
        lambda sha: json.dumps({"format": "../../etc", "framework": "x", "sha256": sha}),
    ],
    ids=["not JSON", "a list", "null", "an unknown format", "a path as format"],
)
def test_a_damaged_or_foreign_manifest_is_an_integrity_error(manifest, written, tmp_path):
    copy = _copy(written["state_dict"], tmp_path / "model.pt")
    Path(f"{copy}.json").write_text(manifest(hashing.sha256_of(copy)))
    with pytest.raises(jms.IntegrityError):
        jms.load(copy)


# ------------------------------------------------------------------ crafted safetensors


def _safetensors(path: Path, header: Any, data: bytes = b"", length: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def _tensor(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


CRAFTED = {
    "shape [2**40, 2**40]": ({"w": _tensor("F32", [2**40, 2**40], 0, 16)}, b"\0" * 16, None),
    "1 GiB declared in a 16-byte file": ({"w": _tensor("F32", [2**28], 0, 2**30)}, b"\0" * 16, None),
    "overlapping offsets": (
        {"a": _tensor("F32", [2], 0, 8), "b": _tensor("F32", [2], 4, 12)}, b"\0" * 12, None),
    "offsets past the end of the file": ({"a": _tensor("F32", [4], 0, 16)}, b"\0" * 8, None),
    "a gap between tensors": ({"a": _tensor("F32", [1], 4, 8)}, b"\0" * 8, None),
    "negative size": ({"a": _tensor("F32", [-1], 0, 4)}, b"\0" * 4, None),
    "header length larger than the file": (b"{}", b"", 1000),
    "a 100 MB header length claim": (b"{}", b"", 100 * MB),
    "a 2**63 header length claim": (b"{}", b"", 2**63),
    "a non-JSON header": (b"{not json", b"", None),
    "a header that is not an object": (b"[1, 2]", b"", None),
    "aliases naming a missing tensor": (
        {"__metadata__": {"aliases": '{"b": "missing"}'}, "a": _tensor("F32", [1], 0, 4)},
        b"\0" * 4, None),
}  # fmt: skip


@contextlib.contextmanager
def _memory_watch() -> Iterator[dict[str, int]]:
    """Peak growth while the block runs: resident memory (Linux peak RSS, reset through
    /proc/self/clear_refs) and Python allocations (tracemalloc)."""
    found: dict[str, int] = {}
    rss_reset = True
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    except OSError:
        rss_reset = False
    start = _status_kb("VmRSS") if rss_reset else 0
    tracemalloc.start()
    try:
        yield found
    finally:
        found["python"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if rss_reset:
            found["rss"] = (_status_kb("VmHWM") - start) * 1024


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_the_memory_watch_sees_a_real_allocation():
    """The < 50 MB bound below would catch an allocation: here 128 MB is seen."""
    with _memory_watch() as used:
        big = torch.ones(32 * MB)
        del big
    assert used.get("rss", 128 * MB) >= 100 * MB


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("manifest", [False, True], ids=["no manifest", "a matching manifest"])
@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_safetensors_header_is_refused_without_allocating_it(case, manifest, tmp_path):
    # Given a crafted .safetensors file (with a manifest that matches it, or none)
    header, data, length = CRAFTED[case]
    path = _safetensors(tmp_path / "model.safetensors", header, data, length)
    if manifest:
        _with_manifest(path, "safetensors")
    # When it is loaded, then it is refused, having allocated next to nothing
    with _memory_watch() as used, pytest.raises(jms.IntegrityError):
        jms.load(path)
    assert used["python"] < 50 * MB
    assert used.get("rss", 0) < 50 * MB


@pytest.mark.parametrize("case", ["shape [2**40, 2**40]", "a 100 MB header length claim"])
def test_a_crafted_safetensors_string_is_refused(case, tmp_path):
    header, data, length = CRAFTED[case]
    path = _safetensors(tmp_path / "model.safetensors", header, data, length)
    with _memory_watch() as used, pytest.raises(jms.IntegrityError):
        jms.from_base64(encode(path, "safetensors"))
    assert used["python"] < 50 * MB


def _sharded_folder(folder: Path, shard_names: list[str]) -> Path:
    folder.mkdir()
    _safetensors(folder / "model-00001-of-00001.safetensors", {"a": _tensor("F32", [1], 0, 4)},
                 b"\0" * 4)  # fmt: skip
    weight_map = {f"t{i}": name for i, name in enumerate(shard_names)}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


@pytest.fixture
def outside(tmp_path) -> Path:
    """A valid safetensors file outside the artifact folder (a user's other weights)."""
    return _safetensors(tmp_path / "secret.safetensors", {"s": _tensor("F32", [1], 0, 4)}, b"1234")


@pytest.mark.parametrize(
    "name",
    ["../secret.safetensors", "{outside}", "/dev/zero", "sub/../../secret.safetensors", "", ".."],
    ids=["relative escape", "absolute path", "a device", "nested escape", "empty", "parent"],
)
@pytest.mark.parametrize("manifest", [False, True], ids=["no manifest", "a matching manifest"])
def test_a_shard_index_cannot_reach_outside_its_folder(name, manifest, outside, tmp_path):
    # Given a sharded artifact whose index names a file outside it (the manifest's sha256 covers
    # only the folder, so an attacker's manifest matches)
    folder = _sharded_folder(
        tmp_path / "model.safetensors",
        ["model-00001-of-00001.safetensors", name.format(outside=outside)],
    )
    if manifest:
        _with_manifest(folder, "safetensors")
    # When it is loaded, then it is refused without reading the other file
    with no_hang(20), pytest.raises(jms.IntegrityError, match="not a file in the artifact"):
        jms.load(folder)


def test_a_shard_symlinked_outside_the_folder_is_refused(outside, tmp_path):
    folder = _sharded_folder(tmp_path / "model.safetensors", ["link.safetensors"])
    (folder / "link.safetensors").symlink_to(outside)
    with pytest.raises(jms.IntegrityError, match="not a file in the artifact"):
        jms.load(folder)


def test_a_fifo_is_refused_instead_of_blocking_the_kernel(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    with no_hang(20), pytest.raises(jms.InvalidOptionError, match="not a file or a folder"):
        jms.load(fifo)


# ------------------------------------------------------------------ crafted base64 strings


def _string(fmt: str, layout: str, payload: bytes) -> str:
    sha = hashlib.sha256(payload).hexdigest()  # an attacker computes the right sha256
    return f"jms1:{fmt}:{layout}:{sha}:{base64.b64encode(payload).decode()}"


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("members", "compression"),
    [
        ({"model.safetensors.index.json": b"{}", "big.bin": b"\0" * 50 * MB}, zipfile.ZIP_DEFLATED),
        ({"../escaped.txt": b"x"}, zipfile.ZIP_STORED),
        ({"/abs.txt": b"x"}, zipfile.ZIP_STORED),
        ({"a/./b": b"x"}, zipfile.ZIP_STORED),
    ],
    ids=["zip bomb", "parent path", "absolute path", "dot path"],
)
def test_a_crafted_folder_string_is_refused_before_extraction(members, compression, tmp_path):
    text = _string("safetensors", "zip", _zip(members, compression))
    with pytest.raises(jms.IntegrityError, match="never writes"):
        jms.from_base64(text)
    assert not (tmp_path.parent / "escaped.txt").exists()


@pytest.mark.parametrize(
    "fmt", ["onnx", "torchscript", "torch_export", "safetensors", "state_dict", "checkpoint"]
)
def test_a_string_with_a_right_sha256_but_garbage_inside_is_an_integrity_error(fmt):
    # garbage for a pickle format is reported as not loadable without trust
    with pytest.raises(REFUSED):
        jms.from_base64(_string(fmt, "file", b"garbage" * 20))
