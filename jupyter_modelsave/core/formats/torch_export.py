"""torch.export: ``torch.export.export`` + ``torch.export.save`` into a ``.pt2`` archive.

``dynamic_axes`` become ``dynamic_shapes`` (one ``torch.export.Dim`` per axis name; when the model
narrows an axis' range, e.g. BERT's maximum sequence length, once more with ``Dim.DYNAMIC``, the
ranges torch derives, said in the warnings with torch's suggested fixes). The program is
saved with its weights on the CPU (``move_to_device_pass``) so that it loads on any machine;
``map_location`` moves the loaded program. Parity runs the reloaded program's ``module()``. The
archive embeds ``jupyter_modelsave.json`` (producer, versions, input/output names, ``metadata``).

Safe loading: ``torch.export.load`` unpickles some archive members with ``weights_only=False``
(pickled weights or constants, opaque objects, and as a fallback the example inputs). Unless
``trusted=True``, every such member must first load with ``weights_only=True``, and archives holding
Python objects or compiled code (AOTInductor) raise ``UnsafeArtifactError``. The archive is read
once into memory, checked, then loaded from those same bytes.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .._capture import captured_output, first_line
from ..errors import ExportError, ModelSaveError, UnsafeArtifactError
from ..inputs import ExampleInputs
from ._export_errors import (
    describe,
    fixed_axes,
    is_range_refinement,
    suggested_fixes,
)
from ._torchload import TRUST_HINT, safe_torch_load
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

    def runner(
        self, exported: Exported, job: ExportJob
    ) -> Callable[[ExampleInputs], dict[str, Any]]:
        from ..verify import device_of, module_runner

        module = self.load(exported.path, torch.device(device_of(job.model))).module()
        return module_runner(module, job.output_names)

    def load(self, path: Path, map_location: Any = "cpu", trusted: bool = False) -> Any:
        data = Path(path).read_bytes()
        if not trusted:
            unsafe = unsafe_members(data)
            if unsafe:
                raise UnsafeArtifactError(
                    f"{path} is not a plain exported program: {'; '.join(unsafe)}. {TRUST_HINT}"
                )
        with captured_output():
            program = torch.export.load(io.BytesIO(data))
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


def unsafe_members(data: bytes) -> list[str]:
    """What in a ``.pt2`` archive ``torch.export.load`` would unpickle without restriction."""
    from torch.export.pt2_archive import constants as c

    unsafe: list[str] = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {n.split("/", 1)[-1]: n for n in archive.namelist()}  # drop the root folder
        pickled = [m for m in members if m.endswith(".pt")]
        for member in members:
            if member.startswith(c.AOTINDUCTOR_DIR):
                unsafe.append(f"{member} is compiled native code")
            elif member.endswith(("_weights_config.json", "_constants_config.json")):
                folder = member.rsplit("/", 1)[0] + "/"
                config = json.loads(archive.read(members[member]))["config"]
                for fqn, entry in config.items():
                    name = entry["path_name"]
                    if entry.get("use_pickle"):
                        pickled.append(folder + name)
                    elif folder == c.CONSTANTS_DIR and not name.startswith(
                        c.TENSOR_CONSTANT_FILENAME_PREFIX
                    ):
                        unsafe.append(f"the constant {fqn} is a pickled Python object")
        for member in pickled:
            try:
                safe_torch_load(archive.read(members[member]), "cpu", trusted=False)
            except (UnsafeArtifactError, KeyError):
                unsafe.append(f"{member} needs full unpickling")
    return unsafe


def _on_device(program: Any, device: torch.device) -> Any:
    """``program`` with its weights, constants and device arguments on ``device``."""
    from torch.export.passes import move_to_device_pass

    return move_to_device_pass(program, str(device))
