"""Hostile artifacts, built in code: what an attacker could hand a user as a file or a string.

Each builder writes one artifact under a folder and returns its path. The attacker controls
every byte, including a manifest beside the artifact with the right sha256 (``with_manifest``)
and a made-up signature; only the user's secret key is out of reach. Shared by the tests in
this folder and by ``bench/untrusted_memory.py``.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jupyter_modelsave.core import hashing

GIB_ELEMENTS = 2**28  # float32 elements in 1 GiB


# ------------------------------------------------------------------ manifests an attacker writes


def with_manifest(path: Path, fmt: str, signature: str | None = None, **extra: Any) -> Path:
    """A manifest with the artifact's true sha256 (anyone can compute it) and, optionally, a
    signature field: an attacker may copy one from another artifact or make one up."""
    manifest = {"producer": "jupyter_modelsave", "format": fmt, "sha256": hashing.sha256_of(path),
                "signature": signature, **extra}  # fmt: skip
    Path(f"{path}.json").write_text(json.dumps(manifest))
    return path


def forged_signature(path: Path) -> str:
    """What an attacker can put in the signature field without the key: e.g. the sha256 itself."""
    return f"hmac-sha256:{hashing.sha256_of(path)}"


def rezipped(src: Path | io.BytesIO, dest: Path, replace: Callable[[str, bytes], bytes],
             compression: int = zipfile.ZIP_STORED) -> Path:  # fmt: skip
    """A copy of the zip ``src`` whose members (named without their root folder) pass through
    ``replace``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", compression) as zout:
        for info in zin.infolist():
            data = replace(info.filename.split("/", 1)[-1], zin.read(info.filename))
            zout.writestr(info.filename, data, compress_type=compression)
    return dest


# ------------------------------------------------------------------ code that runs at load


def pt2_running_code(exported: Path, dest: Path, marker: Path) -> Path:
    """A real ``.pt2`` whose shape expressions (``expr_str``) create ``marker`` when sympified."""
    payload = f"(__import__('pathlib').Path({str(marker)!r}).touch() or 0)*0 + "

    def poison(node: Any) -> int:
        count = 0
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr_str" and isinstance(value, str):
                    node[key] = payload + value
                    count += 1
                else:
                    count += poison(value)
        elif isinstance(node, list):
            count += sum(poison(v) for v in node)
        return count

    def replace(member: str, data: bytes) -> bytes:
        if member.startswith("models/") and member.endswith(".json"):
            model = json.loads(data)
            assert poison(model), "the exported program has no shape expression to poison"
            return json.dumps(model).encode()
        return data

    return rezipped(exported, dest, replace)


class FileCreatingState(torch.nn.Module):
    """A TorchScript module whose ``__setstate__`` (run by ``torch.jit.load``) creates a file."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.mapped = torch.zeros(1)

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.path = state[0]
        self.training = state[1]
        self.mapped = torch.from_file(self.path, shared=True, size=1)  # creates the file

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def torchscript_running_code(dest: Path, marker: Path) -> Path:
    torch.jit.save(torch.jit.script(FileCreatingState(str(marker))), str(dest))
    return dest


# ------------------------------------------------------------------ torch.save files


def _torch_file_with_pickle(dest: Path, pickle_bytes: bytes) -> Path:
    """A ``torch.save`` zip whose ``data.pkl`` is replaced (the storage record stays)."""
    base = io.BytesIO()
    torch.save({"w": torch.zeros(1)}, base)
    with zipfile.ZipFile(base) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            zout.writestr(info, pickle_bytes if info.filename.endswith("data.pkl") else data)
    return dest


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


# kind -> (pickle of about n bytes, n): each grows torch's weights_only unpickler by more than
# the bound for its file (measured: 235, 63 and 92 bytes of memory per byte of pickle)
PICKLE_BOMBS: dict[str, tuple[Callable[[int], bytes], int]] = {
    # n one-byte EMPTY_SETs in a list
    "empty sets": (lambda n: b"\x80\x02](" + b"\x8f" * n + b"e.", 1_000_000),
    # n MARKs: the unpickler keeps a list per mark
    "marks": (lambda n: b"\x80\x02" + b"(" * n + b".", 3_000_000),
    # n tensors rebuilt from one storage by five bytes each (BINGET fn, BINGET args, REDUCE)
    "tensor views": (lambda n: (
        b"\x80\x02" + _global("torch._utils", "_rebuild_tensor_v2") + b"q\x00"
        + b"((X\x07\x00\x00\x00storage" + _global("torch", "FloatStorage")
        + b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00))\x89"
        + _global("collections", "OrderedDict") + b")Rtq\x01]("
        + b"h\x00h\x01R" * (n // 5) + b"e."
    ), 2_000_000),
}  # fmt: skip


def pickle_bomb(dest: Path, kind: str) -> Path:
    build, n = PICKLE_BOMBS[kind]
    return _torch_file_with_pickle(dest, build(n))


def _deflated(obj: object, dest: Path) -> Path:
    """``torch.save(obj)`` with its zip members deflated; built in memory, so the test needs no
    disk room for the plain file."""
    plain = io.BytesIO()
    torch.save(obj, plain)
    return rezipped(plain, dest, lambda _, data: data, zipfile.ZIP_DEFLATED)


def deflated_state_dict(dest: Path, elements: int = GIB_ELEMENTS // 4) -> Path:
    """A state dict of zeros whose zip members are deflated: 256 MiB of tensor in ~260 KB."""
    return _deflated({"w": torch.zeros(elements)}, dest)


def deflated_checkpoint(dest: Path, elements: int = GIB_ELEMENTS // 4) -> Path:
    return _deflated({"model_state": {"w": torch.zeros(elements)}, "epoch": 1}, dest)


# ------------------------------------------------------------------ ONNX


def _onnx(nodes: list, initializers: list, dest: Path, sparse: list | None = None) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(
        nodes, "g", [], [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=initializers, sparse_initializer=sparse or [],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    dest.write_bytes(model.SerializeToString())
    return dest


def _i64(name: str, value: Any) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array(value, dtype=np.int64), name)


def _f32(name: str, value: Any) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)


def _sparse(name: str, elements: int) -> Any:
    from onnx import helper

    return helper.make_sparse_tensor(_f32(name, [1.0]), _i64(f"{name}_i", [5]), [elements])


def constant_folded(op: str, n: int = GIB_ELEMENTS) -> Callable[[Path], Path]:
    """A graph of one node on constants that ONNX Runtime's constant folding computes at load
    (``n`` float32 elements)."""
    from onnx import TensorProto, helper

    graphs = {
        "Expand": ([helper.make_node("Expand", ["c", "s"], ["y"])], [_f32("c", [1.0]), _i64("s", [n])]),
        "ConstantOfShape": ([helper.make_node("ConstantOfShape", ["s"], ["y"],
                             value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))], [_i64("s", [n])]),
        "Tile": ([helper.make_node("Tile", ["c", "s"], ["y"])], [_f32("c", [1.0]), _i64("s", [n])]),
        "Range": ([helper.make_node("Range", ["a", "b", "d"], ["y"])],
                  [_f32("a", 0.0), _f32("b", float(n)), _f32("d", 1.0)]),
        "Resize": ([helper.make_node("Resize", ["c", "", "sc"], ["y"], mode="nearest")],
                   [_f32("c", [[1.0]]), _f32("sc", [float(n) ** 0.5] * 2)]),
        "Expand then Add": ([helper.make_node("Expand", ["c", "s"], ["e"]),
                             helper.make_node("Add", ["e", "e"], ["y"])], [_f32("c", [1.0]), _i64("s", [n])]),
    }  # fmt: skip
    nodes, initializers = graphs[op]
    return lambda dest: _onnx(nodes, initializers, dest)


def onnx_sparse_initializer(dest: Path) -> Path:
    from onnx import helper

    return _onnx(
        [helper.make_node("Identity", ["sp"], ["y"])], [], dest, [_sparse("sp", GIB_ELEMENTS)]
    )


def onnx_sparse_constant(dest: Path) -> Path:
    from onnx import helper

    node = helper.make_node("Constant", [], ["y"], sparse_value=_sparse("v", GIB_ELEMENTS))
    return _onnx([node], [], dest)


def onnx_sparse_constant_in_a_branch(dest: Path) -> Path:
    """A sparse constant inside an ``If`` branch (a subgraph)."""
    import onnx
    from onnx import helper

    out = [helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, None)]
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["b"], sparse_value=_sparse("v", GIB_ELEMENTS))], "br", [], out
    )  # fmt: skip
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)
    cond = onnx.numpy_helper.from_array(np.array(True), "cond")
    return _onnx([node], [cond], dest)


def onnx_declared_without_data(dest: Path) -> Path:
    """An initializer that declares 1 GiB and holds 4 bytes."""
    import onnx
    from onnx import helper

    tensor = onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=[GIB_ELEMENTS])
    tensor.raw_data = b"\0" * 4
    return _onnx([helper.make_node("Identity", ["w"], ["y"])], [tensor], dest)


ONNX_BOMBS: dict[str, Callable[[Path], Path]] = {
    **{f"{op} of a constant": constant_folded(op) for op in
       ("Expand", "ConstantOfShape", "Tile", "Range", "Resize", "Expand then Add")},
    "a sparse initializer": onnx_sparse_initializer,
    "a sparse Constant": onnx_sparse_constant,
    "a sparse Constant in an If branch": onnx_sparse_constant_in_a_branch,
    "an initializer declared without its data": onnx_declared_without_data,
}  # fmt: skip


def onnx_external_data(folder: Path, location: str, length: int = 16) -> Path:
    """A folder ONNX artifact whose one initializer is external data at ``location``."""
    import onnx
    from onnx import helper

    folder.mkdir(parents=True, exist_ok=True)
    tensor = onnx.TensorProto(name="w", data_type=onnx.TensorProto.UINT8, dims=[length])
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    _onnx([helper.make_node("Identity", ["w"], ["y"])], [tensor], folder / "model.onnx")
    return folder


# ------------------------------------------------------------------ HDF5 (.weights.h5)


def _h5(dest: Path, build: Callable[[Any], None]) -> Path:
    import h5py

    with h5py.File(dest, "w") as fh:
        group = fh.create_group("layers/dense/vars")
        build(group)
    return dest


def h5_external_storage(dest: Path, secret: Path) -> Path:
    """A dataset whose values are the bytes of another file (HDF5 external storage)."""
    size = secret.stat().st_size
    return _h5(dest, lambda g: g.create_dataset("0", shape=(size,), dtype="u1",
                                                  external=[(str(secret), 0, size)]))  # fmt: skip


def h5_virtual_dataset(dest: Path, secret_h5: Path) -> Path:
    import h5py

    def build(group: Any) -> None:
        with h5py.File(secret_h5, "r") as other:
            shape = other["data"].shape
        layout = h5py.VirtualLayout(shape=shape, dtype="u1")
        layout[:] = h5py.VirtualSource(str(secret_h5), "data", shape=shape)
        group.create_virtual_dataset("0", layout)

    return _h5(dest, build)


def h5_external_link(dest: Path, secret_h5: Path) -> Path:
    import h5py

    return _h5(dest, lambda g: g.__setitem__("0", h5py.ExternalLink(str(secret_h5), "/data")))


def h5_soft_link(dest: Path) -> Path:
    import h5py

    def build(group: Any) -> None:
        group.create_dataset("real", data=np.ones(3, "f4"))
        group["0"] = h5py.SoftLink("/layers/dense/vars/real")

    return _h5(dest, build)


def h5_secret(dest: Path, data: bytes) -> Path:
    """An ordinary HDF5 file of the user's, elsewhere on disk."""
    import h5py

    with h5py.File(dest, "w") as fh:
        fh.create_dataset("data", data=np.frombuffer(data, "u1"))
    return dest


def h5_fill_value(dest: Path) -> Path:
    """1 GiB declared, nothing written: reading it materialises the fill value."""
    return _h5(dest, lambda g: g.create_dataset("0", shape=(GIB_ELEMENTS,), dtype="f4",
                                                  chunks=(2**20,), fillvalue=1.0))  # fmt: skip


def h5_compressed(dest: Path) -> Path:
    """256 MiB of zeros in gzip-compressed chunks: a few hundred KB on disk."""
    zeros = np.zeros(GIB_ELEMENTS // 4, "f4")
    return _h5(dest, lambda g: g.create_dataset("0", data=zeros, chunks=(2**20,),
                                                  compression="gzip", compression_opts=9))  # fmt: skip


# ------------------------------------------------------------------ .keras


def keras_config_bomb(dest: Path) -> Path:
    """A tiny ``.keras`` whose config asks Keras to build a 1 GiB embedding."""
    import h5py

    config = {
        "module": "keras", "class_name": "Sequential",
        "config": {"name": "s", "layers": [
            {"module": "keras.layers", "class_name": "InputLayer",
             "config": {"batch_shape": [None, 1], "dtype": "int32", "name": "x"}},
            {"module": "keras.layers", "class_name": "Embedding",
             "config": {"name": "e", "input_dim": GIB_ELEMENTS, "output_dim": 1}},
        ]},
        "build_config": {"input_shape": [None, 1]},
    }  # fmt: skip
    weights = io.BytesIO()
    with h5py.File(weights, "w") as fh:
        fh.create_group("layers")
    with zipfile.ZipFile(dest, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", weights.getvalue())
    return dest


# ------------------------------------------------------------------ base64 strings


def string_of(path: Path, fmt: str, signature: str | None = None) -> str:
    """The ``jms1:`` string an attacker makes of ``path`` (with a made-up signature field)."""
    import base64
    import hashlib

    from jupyter_modelsave.core.transfer import _zipped

    layout, payload = ("zip", _zipped(path)) if path.is_dir() else ("file", path.read_bytes())
    sha = hashlib.sha256(payload).hexdigest()
    mark = f":{signature}" if signature else ""
    return f"jms1:{fmt}:{layout}:{sha}{mark}:{base64.b64encode(payload).decode()}"


def safetensors_declaring(dest: Path, elements: int = GIB_ELEMENTS) -> Path:
    """A 16-byte tensor that declares 1 GiB (the safetensors library refuses it)."""
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [elements], "data_offsets": [0, 4 * elements]}}
    )
    dest.write_bytes(struct.pack("<Q", len(header)) + header.encode() + b"\0" * 16)
    return dest
