"""Re-export without re-tracing: the last dynamo export of each model, reused.

Researchers stage, change the opset, the input/output names or the metadata, and stage again.
None of those change the traced program, so the second stage starts from the cached one:

- same opset: the cached ONNX graph itself is reused (inputs and outputs renamed in place,
  metadata is embedded later as always), so neither tracing nor decomposition runs again;
- another opset: the dynamo exporter starts from the cached ``ExportedProgram`` (no re-tracing;
  torch's decompositions and translation still run).

The cache keeps one entry per model (weakly keyed: it never keeps a model alive). The ONNX graph it
keeps refers to the model's own weight tensors rather than copies. An entry is used only while
everything it depends on is unchanged, read from metadata only (no tensor data, no device sync):

- the model's structure (its submodule objects) and its weights' identity and version counters
  (``tensor._version`` moves on every in-place update, e.g. ``optimizer.step()``);
- the example inputs' names, shapes, dtypes and devices;
- the dynamic axes.

Not detected: a ``forward`` replaced on the instance, or global state that ``forward`` reads;
``clear()`` or a new model object covers those.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from .base import ExportJob


@dataclass
class CachedExport:
    key: tuple
    exported_program: Any  # torch.export.ExportedProgram
    onnx_program: Any  # torch.onnx.ONNXProgram, its graph named after the fields below
    opset: int | None
    input_names: list[str]
    output_names: list[str]


_ENTRIES: weakref.WeakKeyDictionary[Any, CachedExport] = weakref.WeakKeyDictionary()


def cache_key(job: ExportJob) -> tuple:
    model = job.model
    tensors = [*model.parameters(), *model.buffers()]
    return (
        tuple(id(m) for m in model.modules()),
        tuple((id(t), t._version, t.data_ptr()) for t in tensors),
        tuple((s.name, s.shape, s.dtype, s.device) for s in job.example.specs),
        tuple(job.example.kwargs),
        tuple(  # by position, so renaming the inputs keeps the entry
            tuple(sorted(job.dynamic_axes.get(name, {}).items())) for name in job.input_names
        ),
    )


def lookup(job: ExportJob) -> CachedExport | None:
    """The cached export of this job's model, when nothing it depends on has changed."""
    entry = _ENTRIES.get(job.model)
    return entry if entry is not None and entry.key == cache_key(job) else None


def remember(job: ExportJob, onnx_program: Any) -> None:
    _ENTRIES[job.model] = CachedExport(
        cache_key(job),
        onnx_program.exported_program,
        onnx_program,
        job.opset,
        list(job.input_names),
        list(job.output_names),
    )


def renamed(entry: CachedExport, job: ExportJob) -> Any:
    """The cached ONNX program with its inputs and outputs renamed to the job's names."""
    graph = entry.onnx_program.model.graph
    for values, old, new in (
        (graph.inputs, entry.input_names, job.input_names),
        (graph.outputs, entry.output_names, job.output_names),
    ):
        by_name = {value.name: value for value in values}
        for old_name, new_name in zip(old, new):
            if old_name in by_name:
                by_name[old_name].name = new_name
    return entry.onnx_program


def clear() -> None:
    """Forget every cached export."""
    _ENTRIES.clear()
