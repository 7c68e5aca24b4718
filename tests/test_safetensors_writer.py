"""The one-pass safetensors writer writes the library's bytes and the sha256 of what it wrote."""

import hashlib
import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import jupyter_modelsave as jms
from jupyter_modelsave.core import hashing
from jupyter_modelsave.core.formats import _safetensors_writer as writer
from jupyter_modelsave.core.formats.safetensors_format import saveable_tensors

from . import models


def _mixed() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "w": torch.randn(5, 3),
        "w64": torch.randn(4, dtype=torch.float64),
        "bf16": torch.randn(7).bfloat16(),
        "half": torch.randn(2, 2).half(),
        "int8": torch.randint(-100, 100, (9,), dtype=torch.int8),
        "uint8": torch.randint(0, 255, (3,), dtype=torch.uint8),
        "long": torch.arange(6).reshape(2, 3),
        "mask": torch.rand(11) > 0.5,
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(3.5),
        'é "quoted"\n': torch.ones(2),
        "a.b": torch.zeros(1, dtype=torch.int32),
    }


def _split(data: bytes) -> tuple[dict, bytes, bytes]:
    """(header as JSON, header text without __metadata__, tensor bytes) of a safetensors file."""
    n = struct.unpack("<Q", data[:8])[0]
    text = data[8 : 8 + n].decode()
    tensors_text = text
    if text.startswith('{"__metadata__":'):
        start = len('{"__metadata__":')
        _, end = json.JSONDecoder().raw_decode(text, start)
        tensors_text = "{" + text[end + 1 :]
    return json.loads(text), tensors_text, data[8 + n :]


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}, {"note": 'é\u0001\\/"x"'}])
def test_bytes_are_identical_to_save_file(tmp_path, metadata):
    # Given tensors of every common dtype, empty and 0-d ones, odd names
    tensors = _mixed()
    # When both write them
    save_file(tensors, str(tmp_path / "lib.safetensors"), metadata=metadata)
    written = writer.save_file(tensors, tmp_path / "jms.safetensors", metadata)
    # Then the files are the same bytes, and the hash and size are those of the file
    ours = (tmp_path / "jms.safetensors").read_bytes()
    assert ours == (tmp_path / "lib.safetensors").read_bytes()
    assert written.sha256 == hashlib.sha256(ours).hexdigest()
    assert written.size == len(ours)
    assert written.staging_bytes == 0  # no CUDA tensor: nothing staged


def test_many_metadata_keys_differ_only_in_their_order_and_ours_is_stable(tmp_path):
    tensors = _mixed()
    metadata = {k: f"value {k}" for k in "gfedcba"}
    save_file(tensors, str(tmp_path / "lib.safetensors"), metadata=metadata)
    writer.save_file(tensors, tmp_path / "one.safetensors", metadata)
    writer.save_file(tensors, tmp_path / "two.safetensors", dict(reversed(metadata.items())))
    lib, one = (
        (tmp_path / "lib.safetensors").read_bytes(),
        (tmp_path / "one.safetensors").read_bytes(),
    )
    assert len(lib) == len(one)
    assert _split(lib) == _split(one)  # same header (as JSON and tensor text) and same data
    assert one == (tmp_path / "two.safetensors").read_bytes()  # sorted keys: one byte stream


def test_small_chunks_write_the_same_bytes(tmp_path):
    tensors = _mixed()
    a = writer.save_file(tensors, tmp_path / "a.safetensors", {"k": "v"}, chunk_bytes=7)
    b = writer.save_file(tensors, tmp_path / "b.safetensors", {"k": "v"}, fsync=False)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert a.sha256 == b.sha256


def test_cpu_tensors_are_written_from_their_own_memory():
    # Given a bfloat16 tensor (numpy has no such dtype)
    tensor = torch.randn(1000).bfloat16()
    # When the writer takes its bytes
    (piece,) = writer._pieces([("t", tensor)], writer.CHUNK_BYTES)
    view = writer._host_bytes(piece)
    # Then they are the tensor's memory, not a copy
    assert np.frombuffer(view, np.uint8).ctypes.data == tensor.data_ptr()
    assert len(view) == tensor.numel() * 2


def test_tied_and_shared_tensors_as_the_format_prepares_them(tmp_path):
    # Given a state dict with a tied weight and two views of one buffer
    base = torch.arange(12.0)
    state = {"emb": torch.randn(4, 3), "first": base[:6], "second": base[6:]}
    state["head"] = state["emb"]
    tensors, aliases = saveable_tensors(state)
    save_file(tensors, str(tmp_path / "lib.safetensors"), metadata={"aliases": json.dumps(aliases)})
    writer.save_file(tensors, tmp_path / "jms.safetensors", {"aliases": json.dumps(aliases)})
    assert (tmp_path / "jms.safetensors").read_bytes() == (
        tmp_path / "lib.safetensors"
    ).read_bytes()
    assert aliases == {"head": "emb"}


def test_refusals_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="contiguous"):
        writer.save_file({"t": torch.randn(3, 4).t()}, tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match="convert it"):
        writer.save_file({"t": torch.randn(3, dtype=torch.complex128)}, tmp_path / "b.safetensors")
    with pytest.raises(TypeError, match="str to str"):
        writer.save_file({"t": torch.randn(3)}, tmp_path / "c.safetensors", {"n": 1})


def test_single_file_export_hashes_the_bytes_it_wrote(tmp_path):
    # Given a model exported as one safetensors file
    hashes = _export_hashes(tmp_path, max_shard_size="5GB")
    # Then the format reports the sha256 of the file on disk, without reading it back
    assert hashes == hashing.file_hashes(tmp_path / "work" / "model.safetensors")


def test_staged_safetensors_pass_the_round_trip(tmp_path):
    staged = jms.stage(models.SmallCNN(), format="safetensors", metadata={"b": 1, "a": "x"})
    assert staged.report.passed, staged.report.diagnosis
    assert staged.file_hashes == hashing.file_hashes(staged.path)


def test_sharded_export_hashes_every_file_it_wrote(tmp_path):
    hashes = _export_hashes(tmp_path, max_shard_size=1000)
    folder = tmp_path / "work" / "artifact.safetensors"
    assert len(hashes) > 2 and "model.safetensors.index.json" in hashes
    assert hashes == hashing.file_hashes(folder)
    state = {}
    for name in json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]:
        state[name] = None
    for shard in folder.glob("*.safetensors"):
        for name, tensor in load_file(str(shard)).items():
            state[name] = tensor
    assert all(v is not None for v in state.values())


def _export_hashes(tmp_path, **options) -> dict[str, str]:
    """The format's ``export`` on a small CNN in ``tmp_path/work``; the file hashes it reports."""
    from jupyter_modelsave.core.formats import get_format
    from jupyter_modelsave.core.formats.base import ExportJob
    from jupyter_modelsave.core.inputs import ExampleInputs

    fmt = get_format("safetensors")
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    job = ExportJob(models.SmallCNN(), ExampleInputs(()), [], [], {}, None, "auto", {"k": 1}, work,
                    None, fmt.check_options(options))  # fmt: skip
    exported = fmt.export(job)
    assert exported.file_hashes is not None
    return exported.file_hashes


class _OnFakeGpu(torch.Tensor):
    """A CPU tensor that says it is on CUDA, to drive the writer's staging path on the CPU."""

    @property
    def is_cuda(self):
        return True

    @property
    def device(self):
        return torch.device("cuda:0")


class _FakeCuda:
    class Event:
        def record(self, stream):
            pass

        def synchronize(self):
            pass

    class Stream:
        def __init__(self, device=None):
            pass

        def wait_stream(self, stream):
            pass


@pytest.mark.parametrize("chunk_bytes", [64, 1000, 1 << 20])
def test_staging_schedule_writes_the_same_bytes_with_cpu_pieces_in_between(
    tmp_path, monkeypatch, chunk_bytes
):
    # Given "GPU" tensors (the CUDA calls replaced by synchronous stand-ins) and a CPU one
    import contextlib

    monkeypatch.setattr(torch.cuda, "Event", _FakeCuda.Event)
    monkeypatch.setattr(torch.cuda, "Stream", _FakeCuda.Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, pin_memory=False, **k: real_empty(*a, **k))
    torch.manual_seed(0)
    plain = {"a": torch.randn(1000), "b": torch.randn(77).half(), "c": torch.arange(5),
             "d": torch.randn(3000)}  # fmt: skip
    tensors = {k: v if k == "c" else v.as_subclass(_OnFakeGpu) for k, v in plain.items()}
    # When written through the two staging buffers in chunks
    written = writer.save_file(tensors, tmp_path / "gpu.safetensors", chunk_bytes=chunk_bytes)
    # Then the bytes are the library's, and the buffers are two chunks (or the largest tensor)
    save_file(plain, str(tmp_path / "lib.safetensors"))
    ours = (tmp_path / "gpu.safetensors").read_bytes()
    assert ours == (tmp_path / "lib.safetensors").read_bytes()
    assert written.staging_bytes == 2 * min(chunk_bytes, 3000 * 4)
