"""torch.export: ``torch.export.export`` + ``torch.export.save`` into a ``.pt2`` archive.

``dynamic_axes`` become ``dynamic_shapes`` (one ``torch.export.Dim`` per axis name; when the model
narrows an axis' range, e.g. BERT's maximum sequence length, once more with ``Dim.DYNAMIC``, the
ranges torch derives, said in the warnings with torch's suggested fixes). The program is
saved with its weights on the CPU (``move_to_device_pass``) so that it loads on any machine;
``map_location`` moves the loaded program. Parity runs the reloaded program's ``module()``. The
archive embeds ``jupyter_modelsave.json`` (producer, versions, input/output names, ``metadata``).

Loading runs only when the artifact is trusted (signed by this user, or ``trusted=True``):
``torch.export.load`` evaluates strings stored in the archive (its shape expressions go through
``sympy.sympify``, which is ``eval``), unpickles some members without restriction, and the loaded
program's code is generated from the archive's graph. An untrusted ``.pt2`` raises
``UnsafeArtifactError`` before anything in it is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .._capture import captured_output, first_line
from ..errors import ExportError, ModelSaveError, UnsafeArtifactError
from ..frameworks.torch import device_of, module_runner
from ..verify import ArtifactRunner
from ._export_errors import describe, fixed_axes, is_range_refinement, suggested_fixes
from ._torchload import PROGRAM_HINT
from .base import EXTRA_FILE, ArtifactFormat, Exported, ExportJob, dynamic_shapes, embedded_note

FILE = "model.pt2"


class TorchExportFormat(ArtifactFormat):
    name = "torch_export"
    extension = ".pt2"
    description = "torch.export ExportedProgram (.pt2), dynamic shapes from dynamic_axes"

    def export(self, job: ExportJob) -> Exported:
        path = job.workdir / FILE
        try:
            with captured_output() as lines:
                program, notes = _exported_program(job)
                cpu_program = _on_device(program, torch.device("cpu"))
                torch.export.save(
                    cpu_program, str(path), extra_files={EXTRA_FILE: embedded_note(job)}
                )
        except ModelSaveError:
            raise
        except Exception as err:  # torch.export raises many unrelated types
            raise ExportError(describe(err, "torch.export")) from err
        notes += [f"torch.export: {x}" for x in lines[:20]]
        return Exported(path, "torch.export", warnings=notes)

    def runner(self, exported: Exported, job: ExportJob) -> ArtifactRunner:
        # the file this stage just exported from the live model: the user's own program
        module = self.load(exported.path, torch.device(device_of(job.model)), trusted=True).module()
        return module_runner(module, job.output_names)

    def load(self, path: Path, map_location: Any = "cpu", trusted: bool = False) -> Any:
        if not trusted:
            raise UnsafeArtifactError(
                f"{Path(path).name} is a torch.export program (.pt2): torch.export.load evaluates "
                "expressions stored in the archive, so loading it could run any code. "
                + PROGRAM_HINT
            )
        with captured_output():
            program = torch.export.load(str(path))
        return _on_device(program, torch.device(map_location))

    def weights(self, loaded: Any) -> dict[str, torch.Tensor]:
        return dict(loaded.state_dict)


def _exported_program(job: ExportJob) -> tuple[Any, list[str]]:
    """``torch.export.export`` with one ``Dim`` per axis name; when torch narrows an axis' range
    (``Constraints violated``), once more with ``Dim.DYNAMIC`` so torch derives the ranges.

    Returns the program and notes for the stage's warnings (torch's suggested fixes, when used).
    """

    def run(derived: bool) -> Any:
        return torch.export.export(
            job.model,
            job.example.args,
            kwargs=job.example.kwargs or None,
            dynamic_shapes=dynamic_shapes(job, derived=derived),
        )

    try:
        return run(derived=False), []
    except Exception as err:  # torch.export raises many unrelated types
        if not is_range_refinement(err) or fixed_axes(err):  # a fixed axis stays fixed
            raise
        first = err
    try:
        program = run(derived=True)
    except Exception as err:
        raise ExportError(
            f"{describe(first, 'torch.export')} With the ranges torch derives (Dim.DYNAMIC) it "
            f"failed too: {type(err).__name__}: {first_line(err)}"
        ) from err
    fixes = "; ".join(suggested_fixes(first)) or first_line(first)
    return program, [
        f"torch.export: the model limits the dynamic axes ({fixes}); exported with the ranges "
        "torch derives (Dim.DYNAMIC): inputs outside them are refused by the program"
    ]


def _on_device(program: Any, device: torch.device) -> Any:
    """``program`` with its weights, constants and device arguments on ``device``."""
    from torch.export.passes import move_to_device_pass

    return move_to_device_pass(program, str(device))
