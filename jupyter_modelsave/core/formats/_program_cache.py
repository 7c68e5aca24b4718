"""Re-export without re-tracing: the last dynamo export of each model, reused.

Researchers stage, change the opset, the input/output names or the metadata, and stage again.
None of those change the traced program, so the second stage starts from the cached one:

- same opset: the cached ONNX graph itself is reused (inputs and outputs renamed in place,
  metadata is embedded later as always), so neither tracing nor decomposition runs again;
- another opset: the dynamo exporter starts from the cached ``ExportedProgram`` (no re-tracing).
  That program is the one torch already decomposed for ONNX, so ``reused_decompositions`` lets
  torch skip decomposing it again when the new opset's registry implements the same operators
  (guarded like ``_torchlib_cache``: tested torch versions only, else torch runs unchanged).
  Translation, version conversion and the graph optimiser still run for the new opset.

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

import contextlib
import threading
import weakref
from collections.abc import Iterator
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


# decomposed ExportedProgram -> the set of operators the registry it was decomposed for implements
_DECOMPOSED: weakref.WeakKeyDictionary[Any, frozenset] = weakref.WeakKeyDictionary()
_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def reused_decompositions() -> Iterator[bool]:
    """Within the block, torch.onnx does not decompose a program it decomposed before.

    torch's step 2 (``_prepare_exported_program_for_export``: decompositions, type promotion,
    assertion removal) is the costly part of a re-export from a cached program; its input is
    then its own earlier output, so running it again changes nothing when the registry
    implements the same operators. Yields whether the shortcut is in place.
    """
    from ._torchlib_cache import supported

    core = _torch_core() if supported() else None
    if core is None:
        yield False
        return
    original = core._prepare_exported_program_for_export

    def prepare(exported_program: Any, *, registry: Any) -> Any:
        ops = _implemented_ops(registry)
        if _DECOMPOSED.get(exported_program) == ops:
            return exported_program
        prepared = original(exported_program, registry=registry)
        _DECOMPOSED[prepared] = ops
        return prepared

    with _PATCH_LOCK:
        core._prepare_exported_program_for_export = prepare
        try:
            yield True
        finally:
            core._prepare_exported_program_for_export = original


def _torch_core() -> Any:
    try:
        from torch.onnx._internal.exporter import _core, _decomp
    except ImportError:
        return None
    needed = (hasattr(_core, "_prepare_exported_program_for_export")
              and hasattr(_decomp, "get_onnx_implemented_overloads"))  # fmt: skip
    return _core if needed else None


def _implemented_ops(registry: Any) -> frozenset:
    from torch.onnx._internal.exporter import _decomp

    return frozenset(_decomp.get_onnx_implemented_overloads(registry))
