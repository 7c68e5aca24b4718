"""ONNX through ``torch.onnx.export``: the dynamo exporter first, TorchScript as the fallback.

The artifact is one ``.onnx`` file, or for models over 2 GB (protobuf's limit) a folder
``<name>.onnx/`` holding ``model.onnx`` and its external data ``model.onnx.data``.

With the dynamo exporter the metadata is embedded in the exported graph before it is saved, and
the weights are written once, straight from the model's tensors (tensors over 1 MiB at 64 KiB
offsets, so ONNX Runtime can map them rather than copy them); the file is then checked by path,
so the weights are never loaded back into a second in-memory copy. The TorchScript fallback's file
is loaded and saved again to embed the metadata (and gather its external data into one file).

An exporter's result is used only when it is what was asked for: the requested opset exactly
(torch's dynamo exporter builds opset-18 graphs and reaches lower opsets only through onnx's
version converter, so below 18 ``exporter="auto"`` tries TorchScript first), and every requested
dynamic axis still symbolic in the graph's inputs. Otherwise the next exporter is tried, and when
none is left ``ExportError`` says what each one did.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from .._capture import captured_output, first_line, value_conversions
from .._exporter_steps import exporter_steps
from ..errors import ExportError
from ..inputs import ExampleInputs
from ..options import EXPORTERS, shared_dimensions
from ..verify import ArtifactRunner, no_progress
from . import _baked_values
from .base import ArtifactFormat, Capabilities, Exported, ExportJob, dynamic_shapes, producer

EXTERNAL_DATA_BYTES = 2 * 1024**3 - 64 * 1024**2  # leave room for the graph itself
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
_ALIGNMENT = 64 * 1024  # external data offsets of big tensors: ORT maps aligned ones, copies others
DYNAMO_OPSET = 18  # the opset torch.onnx's dynamo exporter builds; lower ones are converted
_RNN_OPS = ("lstm", "gru", "rnn_tanh", "rnn_relu")


class OnnxFormat(ArtifactFormat):
    name = "onnx"
    extension = ".onnx"
    description = (
        "ONNX graph (+ external data over 2 GB), checked with onnx.checker and ONNX Runtime"
    )
    capabilities = Capabilities(exporters=EXPORTERS, opsets=True, folder=True, graph_view=True,
                                precisions=("fp32", "fp16", "bf16", "int8"), generation=True)  # fmt: skip

    def precisions_here(self) -> tuple[str, ...]:
        """bf16 only where ONNX Runtime has bf16 kernels (not its CPU provider)."""
        from .. import _ort

        here = self.capabilities.precisions
        return here if _ort.has_bf16() else tuple(p for p in here if p != "bf16")

    def export(self, job: ExportJob) -> Exported:
        large = job.external_data
        if large is None:
            large = _model_bytes(job.model) > EXTERNAL_DATA_BYTES
        folder = job.workdir / "artifact.onnx" if large else job.workdir
        folder.mkdir(exist_ok=True)
        path = folder / MODEL_FILE
        with exporter_steps(job.progress or no_progress, 0.1, 0.6):  # torch.onnx's own steps
            exporter, notes, conversions = _export_with_fallback(job, path, large)
        opset = _finish(path, job, large, embedded=exporter == "dynamo")
        return Exported(folder if large else path, exporter, opset, notes,
                        value_conversions=conversions)  # fmt: skip

    def runner(self, exported: Exported, job: ExportJob) -> ArtifactRunner:
        from .. import _ort

        # with external data (a large model), ORT maps the weights rather than copying them
        sess = _ort.session(
            _model_file(exported.path), map_weights=exported.path.is_dir(), spin=False
        )

        def run(probe: ExampleInputs) -> dict[str, Any]:
            return _ort.run_named(sess, _ort.numpy_feeds(sess, job.input_names, probe.tensors))

        return run

    def graph_view(self, path: Path) -> bytes:
        """An ONNX copy whose initializers keep name, dtype and dims but hold no data (of a
        generation export's seq2seq folder: the decoder's)."""
        import onnx

        from ..generation import graph_file

        model = onnx.load(str(graph_file(path)), load_external_data=False)
        for tensor in model.graph.initializer:
            for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data",
                          "uint64_data", "string_data", "external_data"):  # fmt: skip
                tensor.ClearField(field)
            tensor.data_location = onnx.TensorProto.DEFAULT
        return model.SerializeToString()

    def load(self, path: Path, map_location: Any = "cpu", trusted: bool = False) -> Any:
        """An ORT session; an untrusted file is checked first and opened without constant
        folding, so its memory stays bounded (``_onnx_limits.py``)."""
        from .. import _ort
        from ..generation import is_seq2seq_folder
        from ._onnx_limits import check_sparse

        if is_seq2seq_folder(path):  # a generation export's encoder and decoder (issue 18)
            from ..generation.loading import load_seq2seq

            return load_seq2seq(self, path, map_location, trusted)
        if not trusted:
            check_sparse(_model_file(path))
        cuda = str(map_location).startswith("cuda")
        return _ort.session(_model_file(path), prefer_cuda=cuda, untrusted=not trusted)


def _model_file(path: Path) -> Path:
    return path / MODEL_FILE if path.is_dir() else path


def _model_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def exporters_to_try(job: ExportJob) -> list[str]:
    """The exporters to try, in order, for the job's ``exporter`` option and opset.

    ``auto`` is dynamo then TorchScript, except below ``DYNAMO_OPSET``: TorchScript builds those
    opsets natively, dynamo only through onnx's version converter. ``torchscript`` is TorchScript
    then dynamo; ``dynamo`` is dynamo only. TorchScript is left out above the opsets it knows.
    """
    if job.exporter == "dynamo":
        return ["dynamo"]
    order = ["dynamo", "torchscript"]
    if job.exporter == "torchscript" or (job.opset is not None and job.opset < DYNAMO_OPSET):
        order.reverse()
    torchscript_max = torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    if job.opset is not None and job.opset > torchscript_max:
        order.remove("torchscript")
    return order


def _export_with_fallback(
    job: ExportJob, path: Path, large: bool
) -> tuple[str, list[str], list[str]]:
    """Run the exporters in turn until one gives the graph asked for.

    Returns (exporter used, notes, value conversions: where tracing baked in tensor values).
    """
    notes: list[str] = []
    failed: list[str] = []
    for exporter in exporters_to_try(job):
        try:
            with captured_output() as lines:
                export = _export_dynamo if exporter == "dynamo" else _export_torchscript
                own_notes, opset = export(job, path, large)
            problem = _opset_problem(opset, job, lines)
            if problem:
                raise ExportError(problem)
        except Exception as err:  # exporters raise many unrelated types; we report them all
            failed.append(exporter)  # an ExportError is ours: the graph is not the one asked for
            why = f": {err}" if isinstance(err, ExportError) else f" failed: {failure_text(err)}"
            notes.append(f"{exporter} exporter{why}")
            continue
        conversions, shape_notes = _baked_values.confirmed(job, value_conversions([*notes, *lines]))
        if exporter == "dynamo" and job.opset is not None and job.opset < DYNAMO_OPSET:
            notes.append(
                f"dynamo built opset {DYNAMO_OPSET} and onnx's version converter turned it into "
                f"opset {job.opset}: only the parity report vouches for the conversion."
            )
        if failed:
            notes.append(f"used the {exporter} exporter instead; check the parity report closely.")
        notes += [f"{exporter}: {line}" for line in [*own_notes, *lines[:20]]] + shape_notes
        return exporter, notes, conversions
    at = f" at opset {job.opset}" if job.opset is not None else ""
    tried = "\n  ".join(notes)
    raise ExportError(
        f"The model could not be exported to ONNX{at}.\n  {tried}\n{_export_hint(job, failed, notes)}"
    )


def failure_text(err: BaseException) -> str:
    """``Type: first line`` of an exporter's error, with its root cause when it wraps one."""
    text = f"{type(err).__name__}: {first_line(err)}"
    root, seen = err, {id(err)}
    while root.__cause__ is not None and id(root.__cause__) not in seen:
        root = root.__cause__
        seen.add(id(root))
    if root is not err:
        text += f" Caused by {type(root).__name__}: {first_line(root)}"
    return text


def _export_hint(job: ExportJob, tried: list[str], notes: list[str]) -> str:
    """What to try next, given the exporters that were tried and why they failed."""
    text = "\n".join(notes)
    hints = []
    if value_conversions(notes):
        hints.append("Replace Python control flow on tensor values with torch.where/torch.cond")
    if "fixed the dynamic axis" in text:
        hints.append("Mark every input that shares a dimension with a dynamic axis")
    if job.opset is not None and "opset" in text:
        hints.append(
            "Ask for an opset both exporters reach (a message above may name the operator's "
            "first opset), or leave opset=None for the exporter's default"
        )
    if not hints:
        hints.append("Check that forward() runs on the example inputs")
    if job.exporter == "dynamo" and "torchscript" not in tried:
        hints.append("or use exporter='auto', which also tries the TorchScript exporter")
    return "; ".join(hints) + "."


def _opset_problem(got: int | None, job: ExportJob, lines: list[str]) -> str | None:
    """Why the graph's opset ``got`` is not the one asked for (None when it is)."""
    if job.opset is None or got == job.opset:
        return None
    reason = next((line for line in reversed(lines) if re.match(r"\w+(Error|Exception): ", line)),
                  "no reason given")  # fmt: skip
    return (
        f"it builds opset-{DYNAMO_OPSET} graphs and onnx's version converter could not turn this "
        f"one into opset {job.opset} ({reason}); the graph stayed at opset {got}."
    )


def _export_dynamo(job: ExportJob, path: Path, large: bool) -> tuple[list[str], int | None]:
    """Export with dynamo, starting from this model's previous export when it still applies.

    Returns (notes, the graph's default-domain opset). Raises ``ExportError`` when a requested
    dynamic axis came out fixed in the graph's inputs.
    """
    from . import _program_cache
    from ._torchlib_cache import reused_torchlib_registry

    cached = _program_cache.lookup(job)
    if cached is not None and cached.opset == job.opset:
        program = _program_cache.renamed(cached, job)
        notes = ["reused the ONNX graph of this model's previous stage"]
    else:
        _fresh_rnn_dispatch()
        with reused_torchlib_registry(), _program_cache.reused_decompositions():
            program = _dynamo_program(job, cached and cached.exported_program)
        notes = []
        if cached is not None:
            _name_dynamic_axes(program, job)
            notes = ["reused the traced program of this model's previous stage"]
    fixed = fixed_dynamic_axes(_graph_input_dims(program), job)
    if fixed:
        raise ExportError(fixed)
    _program_cache.remember(job, program)
    program.model.metadata_props.clear()
    program.model.metadata_props.update(metadata_props(job))
    _save_program(program, path, large)
    return notes, program.model.opset_imports.get("")


def _fresh_rnn_dispatch() -> None:
    """Forget the dispatch choices cached on torch's RNN operators.

    torch.onnx registers a while-loop decomposition of LSTM/GRU for dynamic shapes; once an
    earlier call cached the plain kernel on the operator, later exports in the process use it,
    unroll the sequence and silently fix its length (seen on torch 2.9-2.13).
    """
    for name in _RNN_OPS:
        packet = getattr(torch.ops.aten, name, None)
        for overload in packet.overloads() if packet is not None else []:
            cache = getattr(getattr(packet, overload), "_dispatch_cache", None)
            if isinstance(cache, dict):
                cache.clear()


def _graph_input_dims(program: Any) -> dict[str, list[int | str | None]]:
    """Each graph input's dims: an int when fixed, else the axis name (onnx_ir's symbol)."""
    dims: dict[str, list[int | str | None]] = {}
    for value in program.model.graph.inputs:
        shape = value.shape
        if shape is not None:
            dims[value.name] = [d if isinstance(d, int) else str(d) for d in shape]
    return dims


def fixed_dynamic_axes(dims: dict[str, list[int | str | None]], job: ExportJob) -> str | None:
    """A message naming every requested dynamic axis that the graph's inputs fixed, or None."""
    fixed = [
        f"the dynamic axis {axis!r} ({name} dim {dim}) at {dims[name][dim]}"
        for name, axes in job.dynamic_axes.items()
        if name in dims
        for dim, axis in axes.items()
        if dim < len(dims[name]) and isinstance(dims[name][dim], int)
    ]
    if not fixed:
        return None
    message = f"it fixed {', '.join(fixed)}."
    hint = shared_dimensions(
        [s.shape for s in job.example.specs], job.input_names, job.dynamic_axes
    )
    return message + (f" {hint}" if hint else "")


def _save_program(program: Any, path: Path, large: bool) -> None:
    """Save the graph; when large, the weights go to ``DATA_FILE``, aligned for memory mapping."""
    if not large:
        program.save(str(path))
        return
    import onnx_ir

    try:
        onnx_ir.save(program.model, str(path), external_data=DATA_FILE, alignment=_ALIGNMENT)
    except TypeError:  # onnx_ir < 1.1 has no alignment option: packed, ORT copies the weights
        program.save(str(path), external_data=True)


def _name_dynamic_axes(program: Any, job: ExportJob) -> None:
    """A cached program carries torch's symbols (``s3``); give them the user's axis names."""
    inputs = {value.name: value for value in program.model.graph.inputs}
    mapping = {
        inputs[name].shape[dim]: axis
        for name, axes in job.dynamic_axes.items()
        if name in inputs
        for dim, axis in axes.items()
        if not isinstance(inputs[name].shape[dim], int)
    }
    if mapping:
        program.rename_axes(mapping)


def _dynamo_program(job: ExportJob, cached: Any) -> Any:
    """Export from the cached ``ExportedProgram`` when there is one, else trace the model."""
    return torch.onnx.export(
        cached if cached is not None else job.model,
        job.example.args,
        kwargs=job.example.kwargs or None,
        dynamo=True,
        dynamic_shapes=None if cached is not None else dynamic_shapes(job),
        input_names=job.input_names,
        output_names=job.output_names,
        opset_version=job.opset,
        optimize=True,
        verbose=False,
    )


def _export_torchscript(job: ExportJob, path: Path, large: bool) -> tuple[list[str], int | None]:
    """Export with TorchScript: it builds the opset asked for natively, or raises."""
    from ._positional import positional

    model, args = positional(job.model, job.example)
    torch.onnx.export(
        model,
        args,
        str(path),
        dynamo=False,
        input_names=job.input_names,
        output_names=job.output_names,
        dynamic_axes=job.dynamic_axes or None,
        opset_version=job.opset,
        verbose=False,
    )
    return [], job.opset


def _finish(path: Path, job: ExportJob, large: bool, embedded: bool) -> int | None:
    """Embed metadata unless the exporter did, gather external data into one file, check.

    Returns the model's default-domain opset, read from the graph (weights are not loaded).
    """
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
        if not embedded:
            proto = _rewrite_with_metadata(path, job, large)
        onnx.checker.check_model(str(path))  # by path: external data is checked, not loaded
    except (onnx.checker.ValidationError, ValueError, OSError) as err:
        raise ExportError(f"The exported ONNX model is not valid: {first_line(err)}") from err
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def _rewrite_with_metadata(path: Path, job: ExportJob, large: bool) -> Any:
    """Load the exported file (with its weights), embed metadata, save it as one file + data."""
    import onnx

    proto = onnx.load(str(path), load_external_data=True)
    onnx.helper.set_model_props(proto, metadata_props(job))
    for stray in path.parent.iterdir():
        if stray != path:
            stray.unlink()
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=DATA_FILE,
    )
    return proto


def metadata_props(job: ExportJob) -> dict[str, str]:
    """The graph's ``metadata_props``: producer and versions, inputs (with their dynamic axes),
    outputs, and the user's metadata (strings as they are, other values as JSON)."""
    inputs = [
        {**spec.to_dict(), "name": name, "dynamic_axes": job.dynamic_axes.get(name, {})}
        for name, spec in zip(job.input_names, job.example.specs)
    ]
    return {
        **producer(job.framework),
        "inputs": json.dumps(inputs),
        "outputs": json.dumps(job.output_names),
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in job.metadata.items()},
    }
