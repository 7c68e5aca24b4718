"""What every format provides. A format exports into a private work folder; writing is shared."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import InvalidOptionError

if TYPE_CHECKING:
    import torch

    from ..inputs import ExampleInputs
    from ..options import DynamicAxes
    from ..parity import ParityReport
    from ..verify import Progress


@dataclass
class ExportJob:
    """Everything a format needs to export one model, already validated."""

    model: torch.nn.Module
    example: ExampleInputs  # tensors on the model's device, names = forward's parameter names
    input_names: list[str]  # names in the artifact (``input_names`` option or ``example.names``)
    output_names: list[str]
    dynamic_axes: DynamicAxes  # keyed by artifact input/output names
    opset: int | None
    exporter: str  # "auto", "dynamo" or "torchscript"
    metadata: dict[str, Any]  # embedded where the format can hold it
    workdir: Path
    external_data: bool | None = None  # None: only when the model is over 2 GB
    format_options: dict[str, Any] = field(default_factory=dict)  # checked by the format
    # the live model's outputs on ``example``, computed once by ``stage``: the parity check's
    # "example" probe reuses them (cleared after the stage, so a later verify() runs the model)
    example_outputs: list[torch.Tensor] | None = None
    precision: str = "fp32"  # of the artifact (``core/precision.py``); weight formats cast to it


@dataclass
class Exported:
    """A format's result: ``path`` (a file, or a folder for multi-file artifacts) in the workdir."""

    path: Path
    exporter: str
    opset: int | None = None
    warnings: list[str] = field(default_factory=list)
    # sha256 of each file by its path relative to the artifact's folder (as
    # ``hashing.file_hashes`` gives them), when the format hashed the bytes while writing them
    file_hashes: dict[str, str] | None = None
    # where the exporter turned tensor values into Python constants (``_capture.value_conversions``):
    # parity then fails, whatever the probes say
    value_conversions: list[str] = field(default_factory=list)


class ArtifactFormat:
    name: ClassVar[str]
    extension: ClassVar[str]  # of the file, or of the folder for multi-file artifacts
    description: ClassVar[str]
    needs_inputs: ClassVar[bool] = True  # weight formats save without running the model
    # the precisions ``stage(precision=...)`` can make of a float32 model (``core/precision.py``)
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def matches(self, path: Path) -> bool:
        """Whether a file without a manifest looks like this format (by default: its extension)."""
        return str(path).endswith(self.extension)

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Validate this format's own ``stage`` options; the base format takes none."""
        if options:
            raise InvalidOptionError(
                f"format {self.name!r} takes no option(s) {', '.join(sorted(options))}."
            )
        return options

    def export(self, job: ExportJob) -> Exported:
        """Write the artifact into ``job.workdir``."""
        raise NotImplementedError

    def verify(
        self, exported: Exported, job: ExportJob, atol: float, rtol: float, progress: Progress
    ) -> ParityReport:
        """Parity of the staged artifact: by default its outputs against the live model's.

        Weight formats override this with ``verify.weights_parity`` (a bitwise round trip).
        """
        from ..verify import artifact_runner, outputs_parity

        run = artifact_runner(lambda: self.runner(exported, job), self.name)
        return outputs_parity(run, job, atol, rtol, progress, exported.value_conversions)

    def runner(
        self, exported: Exported, job: ExportJob
    ) -> Callable[[ExampleInputs], dict[str, Any]]:
        """A function running the artifact on a probe, returning numpy outputs by name."""
        raise NotImplementedError

    def load(self, path: Path, map_location: Any = "cpu", trusted: bool = False) -> Any:
        """The natural object for a written artifact (an ORT session for ONNX, ...).

        ``map_location`` is a checked ``torch.device`` (or "cpu"); ``trusted=True`` allows full
        unpickling where the format would otherwise refuse it (``UnsafeArtifactError``).
        """
        raise NotImplementedError

    def weights(self, loaded: Any) -> dict[str, torch.Tensor]:
        """The state dict inside what ``load`` returned (for ``jms.load_into``)."""
        raise InvalidOptionError(
            f"A {self.name} artifact holds no PyTorch state dict to load into a model; "
            "export the weights with format='safetensors' or 'state_dict'."
        )


class WeightsFormat(ArtifactFormat):
    """A format that stores weights only: saved without running the model, parity = round trip."""

    needs_inputs = False

    def verify(
        self, exported: Exported, job: ExportJob, atol: float, rtol: float, progress: Progress
    ) -> ParityReport:
        """Reload the staged file: every tensor must come back bitwise equal, same dtype."""
        from ..verify import weights_parity

        return weights_parity(job.model, self.weights(self.load(exported.path)))

    def weights(self, loaded: Any) -> dict[str, torch.Tensor]:
        return loaded


EXTRA_FILE = "jupyter_modelsave.json"  # name of the embedded note in TorchScript and .pt2 archives


def embedded_note(job: ExportJob) -> str:
    """JSON embedded in archives that hold extra files: producer, torch, I/O names, metadata."""
    import json

    import torch

    from ... import __version__

    return json.dumps({"producer": "jupyter_modelsave", "producer_version": __version__,
                       "torch_version": str(torch.__version__), "inputs": job.input_names,
                       "outputs": job.output_names, "metadata": job.metadata})  # fmt: skip


def dynamic_shapes(job: ExportJob, derived: bool = False) -> dict[str, Any] | None:
    """``dynamic_axes`` (artifact names) -> torch.export ``dynamic_shapes`` (forward's names).

    One ``torch.export.Dim`` per axis name, so inputs that share a name share the dimension.
    ``derived=True``: ``Dim.DYNAMIC`` on every dynamic axis instead, so torch derives each
    axis' range and relations from the model (e.g. ``seq <= 64`` under BERT's position
    embeddings) and still raises when the model fixes an axis to one size.
    """
    import torch

    if not any(name in job.dynamic_axes for name in job.input_names):
        return None
    dims: dict[str, Any] = {}
    shapes: dict[str, Any] = {}
    for param, name in zip(job.example.names, job.input_names):
        axes = job.dynamic_axes.get(name)
        if derived:
            shapes[param] = dict.fromkeys(axes, torch.export.Dim.DYNAMIC) if axes else None
            continue
        shapes[param] = (
            {d: dims.setdefault(a, torch.export.Dim(a)) for d, a in axes.items()} if axes else None
        )
    return shapes
