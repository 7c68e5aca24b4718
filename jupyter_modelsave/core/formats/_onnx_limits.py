"""What keeps an untrusted ONNX file from filling memory while ONNX Runtime opens it.

ONNX Runtime creates a session in memory proportional to the file, with two exceptions found by
the adversarial suite (``tests/security/``):

- constant folding: at session creation ORT computes the nodes whose inputs are constants, so a
  100-byte graph (``Expand``, ``ConstantOfShape``, ``Tile``, ``Range``, ``Resize`` ... of a
  constant to 2**28 elements) allocates gigabytes. Untrusted sessions run without the
  ``ConstantFolding`` optimizer; the nodes are then computed when the model runs, on inputs the
  caller chooses;
- sparse tensors (sparse initializers, ``Constant`` nodes with a ``sparse_value``): ORT makes
  them dense at load, so their declared shape, not their stored values, decides the memory.
  ``check_sparse`` refuses untrusted files whose sparse tensors declare more than
  ``MAX_SPARSE_DENSE_BYTES`` in all (the PyTorch and TensorFlow exporters never write any).

External data is read by ORT only inside the model's folder (ORT refuses absolute paths, ``..``
and symlinks leading out) and only up to the file's real length.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UnsafeArtifactError
from ..limits import TRUST_MEMORY_HINT

MAX_SPARSE_DENSE_BYTES = 16 * 2**20
DISABLED_OPTIMIZERS = ["ConstantFolding"]


def check_sparse(model_file: Path) -> None:
    """Refuse a model whose sparse tensors would become more than the limit once dense."""
    import onnx

    model = onnx.load(str(model_file), load_external_data=False)
    declared = sum(_dense_bytes(t) for t in _sparse_tensors(model))
    if declared > MAX_SPARSE_DENSE_BYTES:
        raise UnsafeArtifactError(
            f"{model_file.name} holds sparse tensors that ONNX Runtime would make dense at load: "
            f"{declared:,} bytes, more than an untrusted load may take "
            f"({MAX_SPARSE_DENSE_BYTES:,}). {TRUST_MEMORY_HINT}"
        )


def _sparse_tensors(model: Any) -> Iterator[Any]:
    graphs, nodes = [model.graph], [node for f in model.functions for node in f.node]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            yield from graph.sparse_initializer
            nodes.extend(graph.node)
            continue
        for attr in nodes.pop().attribute:
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor
            yield from attr.sparse_tensors
            if attr.HasField("g"):
                graphs.append(attr.g)
            graphs.extend(attr.graphs)


def _dense_bytes(sparse: Any) -> int:
    import onnx

    count = math.prod(max(int(dim), 0) for dim in sparse.dims)
    data_type = sparse.values.data_type
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 32  # unknown: count as a string
    if data_type == onnx.TensorProto.STRING:
        itemsize = 32  # an empty std::string
    return count * itemsize
