"""Re-export without re-tracing: the last ``torch.export`` program of each model, reused.

Researchers stage, change the opset, the input/output names or the metadata, and stage again.
None of those change the traced program, so the dynamo exporter can start from the cached
``ExportedProgram`` instead of tracing the model again. The cache keeps one program per model
(weakly keyed: it never keeps a model alive) and is keyed by what the program depends on:

- the model's structure (its submodule objects) and its weights' identity and version counters
  (``tensor._version`` moves on every in-place update, e.g. ``optimizer.step()``);
- the example inputs' names, shapes, dtypes and devices;
- the dynamic axes.

All of these are read from metadata only: no tensor data, no device synchronisation. Not detected:
a ``forward`` replaced on the instance, or global state ``forward`` reads; ``clear()`` or a new
model object covers those.
"""

from __future__ import annotations

import weakref
from typing import Any

from .base import ExportJob

_PROGRAMS: weakref.WeakKeyDictionary[Any, tuple[tuple, Any]] = weakref.WeakKeyDictionary()


def cache_key(job: ExportJob) -> tuple:
    model = job.model
    tensors = [*model.parameters(), *model.buffers()]
    return (
        tuple(id(m) for m in model.modules()),
        tuple((id(t), t._version, t.data_ptr()) for t in tensors),
        tuple((s.name, s.shape, s.dtype, s.device) for s in job.example.specs),
        tuple(job.example.kwargs),
        tuple(
            sorted((name, tuple(sorted(axes.items()))) for name, axes in job.dynamic_axes.items())
        ),
    )


def lookup(job: ExportJob) -> Any | None:
    """The cached program for this job's model, when nothing it depends on has changed."""
    entry = _PROGRAMS.get(job.model)
    return entry[1] if entry is not None and entry[0] == cache_key(job) else None


def remember(job: ExportJob, program: Any) -> None:
    _PROGRAMS[job.model] = (cache_key(job), program)


def clear() -> None:
    """Forget every cached program."""
    _PROGRAMS.clear()
