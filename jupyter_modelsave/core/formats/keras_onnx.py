"""ONNX for Keras models (Keras' ``export(format="onnx")``) and ``tf.Module``s (tf2onnx).

Both go through ``tf2onnx.convert.from_function`` on a graph traced with the example's
``tf.TensorSpec``s (``None`` on the dynamic axes). The graph's outputs are renamed to jms' names
(``output``, ``output_<i>``, a dict's keys) and its dynamic dimensions to the axis names; the
metadata is PyTorch ONNX's (``onnx.metadata_props``), and so are parity (ONNX Runtime on the same
probes) and loading (``OnnxFormat``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from .._capture import captured_output, first_line
from ..errors import ExportError, ModelSaveError
from ..frameworks.keras import NeedsTFBackend, require, signature
from .base import Capabilities, Exported, ExportJob
from .onnx import MODEL_FILE, OnnxFormat, metadata_props


class KerasOnnxFormat(NeedsTFBackend, OnnxFormat):
    description = "ONNX graph through tf2onnx, checked with onnx.checker and ONNX Runtime"
    # one file (no external data); precision variants and generation: PyTorch models only
    capabilities = Capabilities(opsets=True, graph_view=True)

    def export(self, job: ExportJob) -> Exported:
        require("tf2onnx", "Exporting a Keras/TensorFlow model to ONNX")
        path = job.workdir / MODEL_FILE
        try:
            with captured_output() as lines, warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*np.object.*", category=FutureWarning)
                self.convert(job, path)
        except ModelSaveError:
            raise
        except Exception as err:  # Keras, TF and tf2onnx raise many unrelated types
            raise ExportError(
                f"The model could not be exported to ONNX: {type(err).__name__}: "
                f"{first_line(err)}. Check that the model runs on the example inputs in a "
                "tf.function (no Python-side effects on tensor values), or save it with "
                "format='savedmodel' or 'keras'."
            ) from err
        opset = _finish(path, job)
        notes = [f"tf2onnx: {line}" for line in lines[:20] if "WARNING" in line.upper()]
        return Exported(path, "tf2onnx", opset, notes)

    def convert(self, job: ExportJob, path: Path) -> None:
        job.model.export(str(path), format="onnx", input_signature=signature(job),
                         opset_version=job.opset, verbose=False)  # fmt: skip


class ModuleOnnxFormat(KerasOnnxFormat):
    """A plain ``tf.Module``: its ``__call__`` traced and converted with tf2onnx."""

    def convert(self, job: ExportJob, path: Path) -> None:
        tf = require("tensorflow", "Exporting a tf.Module to ONNX")
        import tf2onnx

        try:  # tf2onnx 1.17 still uses np.object etc.; Keras ships the fix it applies to itself
            from keras.src.export.tf2onnx_lib import patch_tf2onnx

            patch_tf2onnx()
        except ImportError:
            pass
        spec = signature(job)
        function = tf.function(lambda *args: job.model(*args), input_signature=spec)
        tf2onnx.convert.from_function(
            function, input_signature=spec, opset=job.opset, output_path=str(path)
        )


def _finish(path: Path, job: ExportJob) -> int | None:
    """Name inputs, outputs and dynamic axes as jms does, embed metadata, run onnx.checker."""
    import onnx

    try:
        proto = onnx.load(str(path))
        graph = proto.graph
        _refuse_bfloat16(graph)
        _rename(graph, [i.name for i in graph.input], job.input_names, "inputs")
        outputs = [o.name for o in graph.output]
        if set(outputs) != set(job.output_names):  # a dict's keys already match by name
            _rename(graph, outputs, job.output_names, "outputs")
        for value in [*graph.input, *graph.output]:
            for dim, axis in job.dynamic_axes.get(value.name, {}).items():
                value.type.tensor_type.shape.dim[dim].dim_param = axis
        onnx.helper.set_model_props(proto, metadata_props(job))
        onnx.save_model(proto, str(path))
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, ValueError, OSError, IndexError) as err:
        raise ExportError(f"The exported ONNX model is not valid: {first_line(err)}") from err
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def _refuse_bfloat16(graph: Any) -> None:
    """A bfloat16 graph (a ``mixed_bfloat16`` policy) is refused: ONNX Runtime's CPU provider
    has no bfloat16 convolutions or matrix products, so the file could not be checked."""
    from onnx import TensorProto

    bf16 = TensorProto.BFLOAT16
    casts = any(
        node.op_type == "Cast" and any(a.name == "to" and a.i == bf16 for a in node.attribute)
        for node in graph.node
    )
    values = [*graph.input, *graph.output, *graph.value_info]
    if (
        casts
        or any(v.type.tensor_type.elem_type == bf16 for v in values)
        or any(t.data_type == bf16 for t in graph.initializer)
    ):
        raise ExportError(
            "The model computes in bfloat16 (a mixed_bfloat16 policy), which ONNX Runtime cannot "
            "run on the CPU, so the ONNX file could not be checked. Save it with "
            "format='savedmodel' or 'keras', or export a float32 copy: build the model again "
            "after keras.mixed_precision.set_global_policy('float32'), copy the weights with "
            "copy.set_weights(model.get_weights()) and export the copy (mixed_float16 exports)."
        )


def _rename(graph: Any, old: list[str], new: list[str], kind: str) -> None:
    if len(old) != len(new):
        raise ExportError(
            f"The ONNX graph has {len(old)} {kind} ({', '.join(old)}) but the model has "
            f"{len(new)}; export with format='savedmodel' instead."
        )
    mapping = {o: n for o, n in zip(old, new) if o != n}
    if not mapping:
        return
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = mapping.get(value.name, value.name)
