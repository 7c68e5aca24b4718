"""ONNX through ``torch.onnx.export``: the dynamo exporter first, TorchScript as the fallback.

The artifact is one ``.onnx`` file, or for models over 2 GB (protobuf's limit) a folder
``<name>.onnx/`` holding ``model.onnx`` and its external data ``model.onnx.data``.

With the dynamo exporter the metadata is embedded in the exported graph before it is saved, and
the weights are written once, straight from the model's tensors (tensors over 1 MiB at 64 KiB
offsets, so ONNX Runtime can map them rather than copy them); the file is then checked by path,
so the weights are never loaded back into a second in-memory copy. The TorchScript fallback's file
is loaded and saved again to embed the metadata (and gather its external data into one file).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ... import __version__
from .._capture import captured_output, first_line
from ..errors import ExportError
from ..inputs import ExampleInputs
from .base import ArtifactFormat, Exported, ExportJob, dynamic_shapes

EXTERNAL_DATA_BYTES = 2 * 1024**3 - 64 * 1024**2  # leave room for the graph itself
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
_ALIGNMENT = 64 * 1024  # external data offsets of big tensors: ORT maps aligned ones, copies others
RESERVED_METADATA = ("producer", "producer_version", "torch_version", "inputs", "outputs")


class OnnxFormat(ArtifactFormat):
    name = "onnx"
    extension = ".onnx"
    description = (
        "ONNX graph (+ external data over 2 GB), checked with onnx.checker and ONNX Runtime"
    )

    def export(self, job: ExportJob) -> Exported:
        large = job.external_data
        if large is None:
            large = _model_bytes(job.model) > EXTERNAL_DATA_BYTES
        folder = job.workdir / "artifact.onnx" if large else job.workdir
        folder.mkdir(exist_ok=True)
        path = folder / MODEL_FILE
        exporter, notes = _export_with_fallback(job, path, large)
        opset = _finish(path, job, large, embedded=exporter == "dynamo")
        return Exported(folder if large else path, exporter, opset, notes)

    def runner(
        self, exported: Exported, job: ExportJob
    ) -> Callable[[ExampleInputs], dict[str, Any]]:
        from .. import _ort

        # with external data (a large model), ORT maps the weights rather than copying them
        sess = _ort.session(
            _model_file(exported.path), map_weights=exported.path.is_dir(), spin=False
        )
        feed_names = {i.name for i in sess.get_inputs()}
        out_names = [o.name for o in sess.get_outputs()]

        def run(probe: ExampleInputs) -> dict[str, Any]:
            feeds = {
                name: t.detach().cpu().numpy()
                for name, t in zip(job.input_names, probe.tensors)
                if name in feed_names
            }
            return dict(zip(out_names, sess.run(None, feeds)))

        return run

    def load(self, path: Path, map_location: Any = "cpu", trusted: bool = False) -> Any:
        """An ORT session; an untrusted file is checked first and opened without constant
        folding, so its memory stays bounded (``_onnx_limits.py``)."""
        from .. import _ort
        from ._onnx_limits import check_sparse

        if not trusted:
            check_sparse(_model_file(path))
        cuda = str(map_location).startswith("cuda")
        return _ort.session(_model_file(path), prefer_cuda=cuda, untrusted=not trusted)


def _model_file(path: Path) -> Path:
    return path / MODEL_FILE if path.is_dir() else path


def _model_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def _export_with_fallback(job: ExportJob, path: Path, large: bool) -> tuple[str, list[str]]:
    """Run the requested exporter; on failure, the other one. Return (exporter used, notes)."""
    order = (
        ["torchscript", "dynamo"] if job.exporter == "torchscript" else ["dynamo", "torchscript"]
    )
    if job.exporter == "dynamo":
        order = ["dynamo"]
    if (
        job.opset is not None
        and job.opset > torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    ):
        order = [e for e in order if e != "torchscript"]
    notes: list[str] = []
    for exporter in order:
        try:
            with captured_output() as lines:
                export = _export_dynamo if exporter == "dynamo" else _export_torchscript
                own_notes = export(job, path, large)
        except Exception as err:  # exporters raise many unrelated types; we report them all
            notes.append(f"{exporter} exporter failed: {type(err).__name__}: {first_line(err)}")
            continue
        if notes:
            notes.append(f"used the {exporter} exporter instead; check the parity report closely.")
        notes += [f"{exporter}: {line}" for line in [*own_notes, *lines[:20]]]
        return exporter, notes
    raise ExportError(
        "The model could not be exported to ONNX.\n  "
        + "\n  ".join(notes)
        + "\nCheck that forward() runs on the example inputs, replace Python control flow on "
        "tensor values with torch.where/torch.cond, or try exporter='torchscript'."
    )


def _export_dynamo(job: ExportJob, path: Path, large: bool) -> list[str]:
    """Export with dynamo, starting from this model's previous export when it still applies."""
    from . import _program_cache
    from ._torchlib_cache import reused_torchlib_registry

    cached = _program_cache.lookup(job)
    if cached is not None and cached.opset == job.opset:
        program = _program_cache.renamed(cached, job)
        notes = ["reused the ONNX graph of this model's previous stage"]
    else:
        with reused_torchlib_registry(), _program_cache.reused_decompositions():
            program = _dynamo_program(job, cached and cached.exported_program)
        notes = []
        if cached is not None:
            _name_dynamic_axes(program, job)
            notes = ["reused the traced program of this model's previous stage"]
    _program_cache.remember(job, program)
    program.model.metadata_props.clear()
    program.model.metadata_props.update(_metadata_props(job))
    _save_program(program, path, large)
    return notes


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


def _export_torchscript(job: ExportJob, path: Path, large: bool) -> list[str]:
    args: tuple = job.example.args + ((job.example.kwargs,) if job.example.kwargs else ())
    torch.onnx.export(
        job.model,
        args,
        str(path),
        dynamo=False,
        input_names=job.input_names,
        output_names=job.output_names,
        dynamic_axes=job.dynamic_axes or None,
        opset_version=job.opset,
        verbose=False,
    )
    return []


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
    _set_metadata(proto, job)
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


def _metadata_props(job: ExportJob) -> dict[str, str]:
    inputs = [
        {**spec.to_dict(), "name": name, "dynamic_axes": job.dynamic_axes.get(name, {})}
        for name, spec in zip(job.input_names, job.example.specs)
    ]
    return {
        "producer": "jupyter_modelsave",
        "producer_version": __version__,
        "torch_version": torch.__version__,
        "inputs": json.dumps(inputs),
        "outputs": json.dumps(job.output_names),
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in job.metadata.items()},
    }


def _set_metadata(proto: Any, job: ExportJob) -> None:
    del proto.metadata_props[:]
    for key, value in _metadata_props(job).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
