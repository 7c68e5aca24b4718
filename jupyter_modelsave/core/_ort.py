"""ONNX Runtime sessions on the best execution provider installed (CUDA when onnxruntime-gpu is)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def providers(prefer_cuda: bool = True) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if prefer_cuda and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(
    path: Path | str | bytes,
    prefer_cuda: bool = True,
    map_weights: bool = False,
    spin: bool = True,
    untrusted: bool = False,
    external_folder: Path | None = None,
) -> Any:
    """An inference session for ``path`` (or a serialized model's bytes).

    ``external_folder``: where the external data of a model given as bytes lies.

    ``untrusted``: without constant folding, which would compute constant subgraphs of any size
    while the session is created (see ``formats/_onnx_limits.py``).

    ``spin=False``: ORT's worker threads sleep between runs instead of spinning, so a torch run
    right after (as parity alternates them) gets the CPU cores back.

    ``map_weights``: run on the external data file's memory-mapped pages instead of copies (the
    page cache already holds them after the export wrote them): ORT then neither reads nor
    repacks the weights, so creating the session is instant and takes no second copy of a large
    model. MatMul weights are not prepacked, which makes runs somewhat slower: right for a few
    parity probes, not for serving.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: keep ORT's warnings out of notebooks
    if map_weights:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if external_folder is not None:
        options.add_session_config_entry(
            "session.model_external_initializers_file_folder_path", str(external_folder)
        )
    extra: dict[str, Any] = {}
    if untrusted:
        from .formats._onnx_limits import DISABLED_OPTIMIZERS

        extra["disabled_optimizers"] = DISABLED_OPTIMIZERS
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, options, providers=providers(prefer_cuda), **extra)


def numpy_feeds(session: Any, names: Iterable[str], tensors: Iterable[Any]) -> dict[str, Any]:
    """The tensors (named ``names``) that ``session`` takes as inputs, as numpy arrays."""
    wanted = {i.name for i in session.get_inputs()}
    return {n: t.detach().cpu().numpy() for n, t in zip(names, tensors) if n in wanted}


def run_named(session: Any, feeds: dict[str, Any]) -> dict[str, Any]:
    """``session``'s outputs on ``feeds``, by output name."""
    return dict(zip((o.name for o in session.get_outputs()), session.run(None, feeds)))


@functools.cache
def has_bf16() -> bool:
    """Whether ONNX Runtime here runs bf16 MatMul and Add (its CPU provider has no bf16 kernels)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    nodes, inputs = [], []
    for i, op in enumerate(("MatMul", "Add")):  # a graph's most common compute ops
        inputs.append(helper.make_tensor_value_info(f"x{i}", TensorProto.BFLOAT16, [2, 2]))
        nodes.append(helper.make_node(op, [f"x{i}", f"x{i}"], [f"y{i}"]))
    outputs = [helper.make_tensor_value_info(f"y{i}", TensorProto.BFLOAT16, [2, 2])
               for i in range(len(nodes))]  # fmt: skip
    graph = helper.make_graph(nodes, "bf16_probe", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        ort.InferenceSession(
            model.SerializeToString(), options, providers=providers(prefer_cuda=True)
        )
    except Exception:  # NOT_IMPLEMENTED: no kernel for a bf16 node
        return False
    return True
