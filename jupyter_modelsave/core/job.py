"""The job of one stage: everything a format needs to export one model, and what it exported.

``stage`` fills an ``ExportJob`` (options checked, example inputs normalised, the live outputs
computed once); a format's ``export`` returns ``Exported``; ``verify`` and ``StagedExport`` read
both. The same job serves every framework: ``job.adapter`` knows how to call its model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .frameworks import Adapter
    from .inputs import ExampleInputs
    from .options import DynamicAxes

Progress = Callable[[str, float], None]  # progress(step, fraction): stage's callback


@dataclass
class ExportJob:
    """Everything a format needs to export one model, already validated."""

    model: Any
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
    example_outputs: list[Any] | None = None
    framework: str = "torch"  # the model's (``frameworks.REGISTRY``)
    # (atol, rtol) of outputs judged other than the report's tolerances (by their own dtype)
    output_tolerances: dict[str, tuple[float, float]] = field(default_factory=dict)
    progress: Progress | None = None  # the stage's, for exporters that report their own steps
    precision: str = "fp32"  # of the artifact (``core/precision.py``); weight formats cast to it

    @property
    def adapter(self) -> Adapter:
        from .frameworks import adapter

        return adapter(self.framework)


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
