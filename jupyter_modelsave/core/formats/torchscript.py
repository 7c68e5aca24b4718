"""TorchScript: ``torch.jit.trace`` (default) or ``torch.jit.script`` (``method="script"``), a ``.pt``.

Tracing records the operations run on the example inputs, so, as for ONNX, a Python ``if`` on
tensor values is baked in; the parity probes (including other sizes on dynamic axes) catch it.
Scripting compiles ``forward``'s source and keeps control flow, but accepts only TorchScript's
Python subset. Tracing takes positional inputs (keyword-only parameters are not traceable).

Loading runs only when the artifact is trusted (signed by this user, or ``trusted=True``):
``torch.jit.load`` runs the archive's code while it loads (a class's ``__setstate__`` is
TorchScript from the archive, and registered operators such as ``aten::from_file`` read and
write files), and calling the module runs the rest. An untrusted archive raises
``UnsafeArtifactError`` before ``torch.jit.load`` sees it.

The archive embeds ``jupyter_modelsave.json`` (producer, torch version, input/output names, the
user's ``metadata``): ``torch.jit.load(path, _extra_files={"jupyter_modelsave.json": ""})``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .._capture import captured_output, first_line, value_conversions
from ..errors import ExportError, InvalidOptionError, UnsafeArtifactError
from ..frameworks.torch import device_of, module_runner
from ..verify import ArtifactRunner
from . import _baked_values
from ._torchload import PROGRAM_HINT, is_torchscript_archive
from .base import EXTRA_FILE, ArtifactFormat, Exported, ExportJob, embedded_note

FILE = "model.pt"
METHODS = ("trace", "script")


class TorchScriptFormat(ArtifactFormat):
    name = "torchscript"
    extension = ".pt"
    description = "torch.jit.trace or torch.jit.script, parity checked like ONNX"

    def matches(self, path: Path) -> bool:
        return str(path).endswith((".pt", ".pth")) and is_torchscript_archive(path)

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = set(options) - {"method"}
        if unknown:
            raise InvalidOptionError(
                f"format 'torchscript' takes only method, not {', '.join(sorted(unknown))}."
            )
        method = options.get("method", "trace")
        if method not in METHODS:
            raise InvalidOptionError(f"method must be 'trace' or 'script', got {method!r}.")
        return {"method": method}

    def export(self, job: ExportJob) -> Exported:
        method = job.format_options["method"]
        path = job.workdir / FILE
        try:
            with captured_output() as lines, torch.no_grad():
                module = torch.jit.script(job.model) if method == "script" else _trace(job)
                torch.jit.save(module, str(path), _extra_files={EXTRA_FILE: embedded_note(job)})
        except Exception as err:  # tracing and scripting raise many unrelated types
            other = "script" if method == "trace" else "trace"
            raise ExportError(
                f"torch.jit.{method} failed: {type(err).__name__}: {first_line(err)}. Check that "
                f"forward() runs on the example inputs, or try method={other!r}."
            ) from err
        conversions, shape_notes = _baked_values.confirmed(job, value_conversions(lines))
        return Exported(path, method, warnings=_notes(method, lines) + shape_notes,
                        value_conversions=conversions)  # fmt: skip

    def runner(self, exported: Exported, job: ExportJob) -> ArtifactRunner:
        module = torch.jit.load(str(exported.path), map_location=device_of(job.model)).eval()
        return module_runner(module, job.output_names)

    def load(self, path: Path, map_location: Any = "cpu", trusted: bool = False) -> Any:
        if not trusted:
            raise UnsafeArtifactError(
                f"{Path(path).name} is a TorchScript program: torch.jit.load runs code stored in "
                "the archive while loading it (e.g. a __setstate__ method), and that code can "
                "read and write files. " + PROGRAM_HINT
            )
        return torch.jit.load(str(path), map_location=map_location)

    def weights(self, loaded: Any) -> dict[str, torch.Tensor]:
        return loaded.state_dict()


def _notes(method: str, lines: list[str]) -> list[str]:
    """What tracing said (TracerWarnings matter), with torch's deprecation notices folded into one."""
    kept = [f"{method}: {line}" for line in lines if "is deprecated. Please switch" not in line]
    if len(kept) < len(lines):
        kept.append(
            "TorchScript is deprecated in this torch version; format='torch_export' is its successor."
        )
    return kept[:20]


def _trace(job: ExportJob) -> torch.jit.ScriptModule:
    example = job.example
    if example.kwargs:  # trace by name: positional parameters may be given as keywords too
        return torch.jit.trace(
            job.model, example_kwarg_inputs=example.by_name(), strict=False, check_trace=False
        )
    return torch.jit.trace(job.model, example.args, strict=False, check_trace=False)
