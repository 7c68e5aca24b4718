"""What every format provides. A format exports into a private work folder; writing is shared."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import InvalidOptionError
from ..job import Exported, ExportJob  # the formats' job and result (re-exported here)

if TYPE_CHECKING:
    import torch

    from ..parity import ParityReport
    from ..verify import ArtifactRunner, Progress


@dataclass(frozen=True)
class Capabilities:
    """What a format can do, declared once on its class and read by every surface: ``stage``,
    the magic, the widget, and the sidebar (the kernel sends them with its ``options`` reply)."""

    kind: str = "graph"  # "graph" (the computation, checked on probes) or "weights" (tensors only)
    needs_inputs: bool = True  # staged by running the model on example inputs
    dynamic_axes: bool = True  # takes ``dynamic_axes``
    exporters: tuple[str, ...] = ()  # the choices of ``exporter`` (none: no choice to offer)
    opsets: bool = False  # takes ``opset`` (its range: the framework's, ``Adapter.opsets``)
    folder: bool = False  # the artifact can be a folder (else always one file)
    graph_view: bool = False  # Netron can show its graph (the sidebar's graph view)
    # the precisions ``stage(precision=...)`` can make of a float32 model (``core/precision.py``;
    # ``ArtifactFormat.precisions_here``: those this machine's runtime runs)
    precisions: tuple[str, ...] = ("fp32",)
    generation: bool = False  # holds ``generation=True`` exports (``core/generation``)


WEIGHTS = Capabilities(kind="weights", needs_inputs=False, dynamic_axes=False)
# the weight formats' half precisions: a cast copy of the floating tensors
CAST_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


class ArtifactFormat:
    name: ClassVar[str]
    extension: ClassVar[str]  # of the file, or of the folder for multi-file artifacts
    description: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()

    def available(self) -> bool:
        """Whether this process can export to this format (Keras' SavedModel and ONNX need
        Keras' TensorFlow backend); the surfaces offer only the formats that are."""
        return True

    def precisions_here(self) -> tuple[str, ...]:
        """The ``capabilities.precisions`` this machine's runtime runs (by default: all)."""
        return self.capabilities.precisions

    def graph_view(self, path: Path) -> bytes:
        """The artifact at ``path`` as a file that shows its graph without the weights
        (``capabilities.graph_view``: the sidebar shows large artifacts from it)."""
        raise NotImplementedError

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

    def runner(self, exported: Exported, job: ExportJob) -> ArtifactRunner:
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

    capabilities = WEIGHTS

    def verify(
        self, exported: Exported, job: ExportJob, atol: float, rtol: float, progress: Progress
    ) -> ParityReport:
        """Reload the staged file: every tensor must come back bitwise equal, same dtype."""
        from ..verify import weights_parity

        return weights_parity(job.model, self.weights(self.load(exported.path)))

    def weights(self, loaded: Any) -> dict[str, torch.Tensor]:
        return loaded


EXTRA_FILE = "jupyter_modelsave.json"  # the embedded note's name in archives and folders


def producer(framework: str) -> dict[str, str]:
    """Who made an artifact: jms and its version, the framework and its versions
    (``producer``, ``producer_version``, ``framework``, ``<library>_version``)."""
    from ..frameworks import adapter
    from ..version import __version__

    versions = adapter(framework).versions()
    return {"producer": "jupyter_modelsave", "producer_version": __version__,
            "framework": framework, **{f"{k}_version": v for k, v in versions.items()}}  # fmt: skip


def embedded_note(job: ExportJob) -> str:
    """JSON embedded in artifacts that hold extra files: producer, I/O names, metadata."""
    import json

    return json.dumps({**producer(job.framework), "inputs": job.input_names,
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
    dims: dict[str, Any] = {}  # axis name -> its Dim
    shapes: dict[str, Any] = {}
    for param, name in zip(job.example.names, job.input_names):
        axes = job.dynamic_axes.get(name) or {}
        for axis in axes.values():
            dims.setdefault(axis, torch.export.Dim.DYNAMIC if derived else torch.export.Dim(axis))
        shapes[param] = {d: dims[a] for d, a in axes.items()} or None
    return shapes
