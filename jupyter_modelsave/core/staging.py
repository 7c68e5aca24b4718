"""``stage``: export into a private work folder and prove parity; ``StagedExport.write``: accept it.

Nothing touches the destination before ``write``. The live model is left as it was: its device,
dtypes, values, training flags, ``requires_grad`` flags and hooks (see ``model_state.preserved``),
also when stage fails or is interrupted, and the work folder is then removed.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import functools
import os
import shutil
import sys
import tempfile
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from . import artifacts, hashing, hf, trust
from . import precision as variants
from ._capture import first_line
from ._exporter_steps import exporter_steps
from .discovery import last_inputs, recording_paused
from .distributed import is_sharded
from .errors import (
    ExportError,
    InvalidOptionError,
    ModelSaveError,
    NotAModelError,
    ParityError,
    WriteError,
    shown,
)
from .formats import get_format
from .formats.base import ArtifactFormat, Exported, ExportJob, WeightsFormat
from .formats.onnx import RESERVED_METADATA
from .inputs import ExampleInputs, TensorSpec, normalize_inputs
from .keras._tf import KERAS_FRAMEWORKS, framework_of
from .latency import check_latency
from .model_state import preserved, reference_mode
from .options import (
    check_artifact_name,
    check_destination,
    check_dynamic_axes,
    check_exporter,
    check_flag,
    check_metadata,
    check_names,
    check_opset,
    check_optional_flag,
    check_tolerance,
    default_tolerances,
)
from .parity import ParityReport
from .verify import Progress, call_model, device_of, flatten_outputs, no_progress


def _unrecorded(function: Callable) -> Callable:
    """Run ``function`` with last-input recording paused: its forward calls are jms's own."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with recording_paused():
            return function(*args, **kwargs)

    return wrapper


class StagedExport:
    """An exported artifact waiting in a private work folder, with its parity report."""

    def __init__(self, fmt: ArtifactFormat, exported: Exported, job: ExportJob, report: ParityReport | None,
                 name: str, warnings: list[str], output_specs: list[TensorSpec],
                 tolerances: tuple[float, float]) -> None:  # fmt: skip
        self.format = fmt.name
        self.exporter = exported.exporter
        self.opset = exported.opset
        self.path = exported.path
        self.report = report
        self.name = name
        self.warnings = warnings
        self.metadata = job.metadata
        self.input_specs = [
            TensorSpec(n, s.shape, s.dtype, s.device)
            for n, s in zip(job.input_names, job.example.specs)
        ]
        self.output_specs = output_specs
        self.dynamic_axes = job.dynamic_axes
        self.size_bytes = hashing.size_of(self.path)
        # a format that hashed while writing (safetensors) says so; others are read once here
        self.file_hashes = exported.file_hashes or hashing.file_hashes(self.path)
        self.sha256 = hashing.combined_sha256(self.path, self.file_hashes)
        self._extension = fmt.extension
        self._workdir = job.workdir
        self.tolerances = tolerances  # (atol, rtol) of the last parity check
        self._verify_again = lambda atol, rtol: fmt.verify(exported, job, atol, rtol, no_progress)
        self._localize = functools.partial(_localized, fmt.name, exported, job)
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(job.workdir), True)
        # the release check (``core/precision.py``, ``latency.py``, ``diff.py``); ``stage`` sets them
        self.precision = getattr(job, "precision", "fp32")  # a Keras job has none
        self.variant: dict[str, Any] | None = None  # how a variant was made, and its size vs fp32
        self.latency: dict[str, Any] | None = None
        self._parts = (fmt, exported, job)  # what ``diff`` runs and loads
        self._diffs: dict[tuple, dict[str, Any]] = {}
        # tolerances given to stage or verify: an int8 variant is then judged element-wise too
        self._judging = {"element_wise": False}

    @property
    def discarded(self) -> bool:
        return not self._cleanup.alive

    @_unrecorded
    def verify(self, *, atol: float | None = None, rtol: float | None = None) -> ParityReport:
        """Check parity again (e.g. with other tolerances) without exporting again.

        Tolerances default to the last ones used; the new report replaces ``self.report``.
        """
        if self.discarded:
            raise InvalidOptionError("This export was discarded; stage it again to verify it.")
        if atol is not None or rtol is not None:
            self._judging["element_wise"] = True
        atol = self.tolerances[0] if atol is None else check_tolerance("atol", atol)
        rtol = self.tolerances[1] if rtol is None else check_tolerance("rtol", rtol)
        with typed_errors("parity check", self.format):
            self.report = self._verify_again(atol, rtol)
            self._localize(self.report, quietly=True)
        self.tolerances = (atol, rtol)
        return self.report

    @_unrecorded
    def localize(self) -> ParityReport:
        """Find the first module of the live model whose output differs in the artifact.

        Fills ``report.layers``, ``report.first_divergence`` and ``report.localization`` (done
        by ``stage`` and ``verify`` already when parity fails) and returns the report. See
        ``core/localize``.
        """
        if self.discarded:
            raise InvalidOptionError("This export was discarded; stage it again to localize it.")
        if self.report is None:
            raise InvalidOptionError(
                "This export was staged with parity=False: nothing to localize. Call "
                "staged.verify() first."
            )
        with typed_errors("localization", self.format):
            return self._localize(self.report)

    def write(self, dest: str | Path, *, name: str | None = None, version: str | None = None,
              overwrite: bool = False, allow_mismatch: bool = False) -> Path:  # fmt: skip
        """Write the artifact and its ``.json`` manifest; return the artifact's path.

        ``dest`` is a folder (existing, or ending in ``/``): the file is named
        ``<name>_v<version>_<sha256[:12]><ext>`` with the next patch version for that name; or an
        exact file path. Refuses a failed parity report unless ``allow_mismatch=True``.
        """
        if self.discarded:
            raise InvalidOptionError("This export was discarded; stage it again to write it.")
        dest = check_destination(dest)
        overwrite = check_flag("overwrite", overwrite)
        allow_mismatch = check_flag("allow_mismatch", allow_mismatch)
        version = None if version is None else artifacts.check_version(version)
        if self.report is not None and not self.report.passed and not allow_mismatch:
            raise ParityError(
                f"Not written: {self.report.summary()}. Look at staged.report, or pass "
                "allow_mismatch=True to write it anyway.",
                self.report,
            )
        name = check_artifact_name(name if name is not None else self.name)
        try:
            previous = None
            if artifacts.is_folder_destination(os.path.expanduser(str(dest)), self._extension):
                previous = self.diff(dest, name=name)
            target, version, auto = artifacts.destination_path(
                dest, name, version, self.sha256, self._extension
            )
            manifest = self.manifest(name, version)
            if previous is not None:
                from .diff import for_manifest

                manifest["previous"] = for_manifest(previous)
            return artifacts.write_artifact(
                self.path, target, manifest, overwrite=overwrite, auto=auto
            )
        except ModelSaveError:
            raise
        except OSError as err:  # e.g. a name too long for the filesystem, while resolving dest
            raise WriteError(
                err.errno, f"Cannot write to {dest!r}: {err.strerror or err}. Choose another path."
            ) from err

    def discard(self) -> None:
        """Delete the staged files now (they are also deleted when this object is collected)."""
        self._cleanup()

    @_unrecorded
    def diff(self, dest: str | Path, *, name: str | None = None) -> dict[str, Any] | None:
        """What changed since the newest artifact named ``name`` (default: this one's) in the
        folder ``dest``: size ratio, signature changes, outputs (or weights) compared on the
        same probes, warnings (see ``core/diff.py``). None when the folder holds no such artifact.
        """
        from .diff import compare, previous_artifact

        if self.discarded:
            raise InvalidOptionError("This export was discarded; stage it again to compare it.")
        dest = check_destination(dest)
        name = check_artifact_name(name if name is not None else self.name)
        previous = previous_artifact(dest, name)
        if previous is None:
            return None
        key = (str(previous.path), previous.sha256, name)
        if key not in self._diffs:
            with typed_errors("comparison with the previous version", self.format):
                self._diffs[key] = compare(self, previous)
        return self._diffs[key]

    def manifest(self, name: str, version: str) -> dict[str, Any]:
        import onnx

        return {
            "producer": "jupyter_modelsave",
            "name": name,
            "version": version,
            "format": self.format,
            "exporter": self.exporter,
            "opset": self.opset,
            "sha256": self.sha256,
            "signature": trust.sign(self.sha256, self.format),
            "size_bytes": self.size_bytes,
            "files": self.file_hashes,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": {
                "jupyter_modelsave": __version__,
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "python": sys.version.split()[0],
            },
            "inputs": [s.to_dict() for s in self.input_specs],
            "outputs": [s.to_dict() for s in self.output_specs],
            "dynamic_axes": {
                k: {str(d): a for d, a in v.items()} for k, v in self.dynamic_axes.items()
            },
            "parity": None if self.report is None else self.report.to_dict(),
            "warnings": self.warnings,
            "metadata": self.metadata,
            "precision": self.precision,
            "variant": self.variant,
            "latency": self.latency,
        }

    def __repr__(self) -> str:
        parity = "no parity check" if self.report is None else self.report.summary()
        return (
            f"<StagedExport {self.name} {self.format} via {self.exporter}, "
            f"{self.size_bytes:,} bytes, sha256 {self.sha256[:12]}, {parity}>"
        )

    def _repr_html_(self) -> str:
        import html

        head = html.escape(repr(self))
        return f"<div><code>{head}</code>{'' if self.report is None else self.report._repr_html_()}</div>"


@_unrecorded
def stage(
    model: Any,
    example_inputs: Any = None,
    *,
    format: str = "onnx",
    opset: int | None = None,
    dynamic_axes: dict | None = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    parity: bool = True,
    atol: float | None = None,
    rtol: float | None = None,
    metadata: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
    exporter: str = "auto",
    name: str | None = None,
    external_data: bool | None = None,
    progress: Progress | None = None,
    generation: bool = False,
    precision: str | None = None,
    latency: bool | dict[str, Any] = True,
    calibration: Any = None,
    **format_options: Any,
) -> StagedExport:
    """Export ``model`` into a private work folder and check parity against the live model.

    ``example_inputs``: a tensor, tuple of tensors or dict of keyword tensors; default, the inputs
    of the last forward call recorded by ``jms.watch``; weight formats (safetensors, state_dict,
    checkpoint) run without any, and skip the forward pass. ``device``: export a copy of the model on
    that device (the live model never moves); default, where the model lives. See the README for
    every option. Other keyword arguments are options of the chosen format (``format_options``).
    Keras models and ``tf.Module``s are handed to ``core.keras.staging.stage_keras``.
    ``generation=True``: ONNX graphs with past key values for a transformers language model,
    checked on a greedy loop (``core.generation.staging.stage_generation``).

    The release check: ``precision`` ("fp32", "fp16", "bf16", "int8"; default the model's own)
    stages a variant judged against the live model (``core/precision.py``; ``calibration=True``
    or a list of inputs: static int8); ``latency`` (True, False, or ``{"max_runs",
    "max_seconds"}``) measures a graph artifact against the model eager (``core/latency.py``).
    """
    if check_flag("generation", generation):  # generation exports (issue 18)
        from .generation.staging import stage_generation

        _refuse_variant(precision, calibration, "generation exports")

        return stage_generation(model, example_inputs, format=format, opset=opset,
                                dynamic_axes=dynamic_axes, input_names=input_names,
                                output_names=output_names, parity=parity, atol=atol, rtol=rtol,
                                metadata=metadata, device=device, exporter=exporter,
                                name=name if name is not None else _guess_name(model),
                                external_data=external_data, progress=progress,
                                **format_options)  # fmt: skip
    if (framework := framework_of(model)) in KERAS_FRAMEWORKS:
        from .keras.staging import stage_keras

        _refuse_variant(precision, calibration, "Keras models")
        return stage_keras(model, example_inputs, framework=framework, format=format, opset=opset,
                           dynamic_axes=dynamic_axes, input_names=input_names,
                           output_names=output_names, parity=parity, atol=atol, rtol=rtol,
                           metadata=metadata, device=device, exporter=exporter,
                           name=name if name is not None else _guess_name(model),
                           external_data=external_data, progress=progress, **format_options)  # fmt: skip
    if is_sharded(model):  # DTensor weights: a collective call on every rank
        from .distributed.export import stage_sharded

        _refuse_variant(precision, calibration, "sharded models")
        return stage_sharded(model, example_inputs, format=format, opset=opset,
                             dynamic_axes=dynamic_axes, input_names=input_names,
                             output_names=output_names, parity=parity, atol=atol, rtol=rtol,
                             metadata=metadata, device=device, exporter=exporter, name=name,
                             external_data=external_data, progress=progress, **format_options)  # fmt: skip
    progress = check_progress(progress)
    progress("prepare", 0.0)
    model = _check_model(model)
    fmt = get_format(format, "torch")
    exporter = check_exporter(exporter)
    opset = check_opset(opset, exporter)
    external_data = check_optional_flag("external_data", external_data)
    meta = check_metadata(metadata)
    clash = [k for k in meta if k in RESERVED_METADATA]
    if clash:
        raise InvalidOptionError(f"metadata keys {clash} are reserved; rename them.")
    name = check_artifact_name(name if name is not None else _guess_name(model))
    fmt_options = fmt.check_options(format_options)
    own = variants.own_precision(model)
    precision = variants.check(precision, fmt, own)
    calibration = variants.check_calibration(calibration, precision)
    budget = check_latency(latency)
    variant = precision != own
    model, example = _placed(model, _example_for(model, example_inputs, fmt.needs_inputs), device)
    _check_materialised(model)
    runs = example is not None  # else a weight format without inputs: nothing to run or name
    if example is None:
        example = ExampleInputs(())
    ref_dtype = _float_dtype(model)
    default_atol, default_rtol = default_tolerances(ref_dtype)
    explicit = atol is not None or rtol is not None
    if variant and not isinstance(fmt, WeightsFormat):
        default_atol, default_rtol = variants.tolerances(precision) or (default_atol, default_rtol)
    atol = default_atol if atol is None else check_tolerance("atol", atol)
    rtol = default_rtol if rtol is None else check_tolerance("rtol", rtol)
    in_names = check_names("input_names", input_names, len(example.names)) or example.names

    live_names: list[str] = []
    live_tensors: list[torch.Tensor] = []
    if runs:
        with preserved(model), reference_mode(), hf.cache_off(model):
            live_names, live_tensors = flatten_outputs(call_model(model, example))
    out_names = check_names("output_names", output_names, len(live_names)) or live_names
    renamed = example.replaced(example.tensors)
    renamed.names = in_names
    axes = check_dynamic_axes(dynamic_axes, renamed, out_names)
    notes: list[str] = []  # what jms changed for this export, first in the warnings

    def build(workdir: Path) -> StagedExport:
        job = ExportJob(model, example, in_names, out_names, axes, opset, exporter, meta, workdir,
                        external_data, fmt_options, live_tensors if runs else None,
                        precision=precision)  # fmt: skip
        progress("export", 0.1)
        with (
            preserved(model, hide_backward_hooks=True),
            typed_errors("export", fmt.name),
            exporter_steps(progress, 0.1, 0.6),
        ):
            exported = fmt.export(job)
        made = None
        if variant:
            progress(f"{precision} variant", 0.5)
            with typed_errors(f"{precision} conversion", fmt.name):
                exported, made = variants.make(fmt, exported, job, calibration)

        judging = {"element_wise": explicit}

        def check(a: float, r: float, steps: Progress) -> ParityReport:
            if not variant:
                report = fmt.verify(exported, job, a, r, steps)
            else:
                report = variants.verify(fmt, exported, job, a, r, steps, precision,
                                         judging["element_wise"])  # fmt: skip
            report.precision = precision  # the report says what it judged
            return report

        report = None
        if parity:
            progress("parity", 0.6)
            with typed_errors("parity check", fmt.name):
                report = check(atol, rtol, progress)
                _localized(fmt.name, exported, job, report, progress, quietly=True)
        job.example_outputs = None  # a later verify() runs the model as it is then
        warnings = [*notes, *exported.warnings]
        if example_inputs is None and example.names:
            warnings.insert(0, "example inputs: the last recorded forward call's inputs")
        measured = None
        if budget is not None and runs and not isinstance(fmt, WeightsFormat):
            progress("latency", 0.95)
            measured = _latency(fmt, exported, job, budget, warnings)
        specs = [TensorSpec.of(n, t) for n, t in zip(out_names, live_tensors)]
        staged = StagedExport(fmt, exported, job, report, name, warnings, specs, (atol, rtol))
        staged.variant, staged.latency = made, measured
        staged._judging = judging
        staged._verify_again = lambda a, r: check(a, r, no_progress)
        return staged

    with hf.cache_off(model) as hf_notes:  # export and parity: one forward pass, no cache
        notes += hf_notes
        return in_work_folder(build, progress)


def _localized(format_name: str, exported: Exported, job: ExportJob, report: ParityReport,
               progress: Progress = no_progress, *, quietly: bool = False) -> ParityReport:  # fmt: skip
    """``core.localize``: on request (``quietly=False``), or after a failed parity check."""
    from .localize import after_failed_parity, localize

    if quietly:
        after_failed_parity(format_name, exported, job, report, progress)
        return report
    return localize(format_name, exported, job, report, progress)


def _refuse_variant(precision: Any, calibration: Any, what: str) -> None:
    if precision not in (None, "fp32") or calibration not in (None, False):
        raise InvalidOptionError(
            f"precision variants are made for PyTorch models on one process; {what} take "
            "precision='fp32' (their own) only. Stage the variant from a float32 PyTorch model."
        )


def _latency(fmt: ArtifactFormat, exported: Exported, job: ExportJob, budget: Any,
             warnings: list[str]) -> dict[str, Any] | None:  # fmt: skip
    """The measured latency, or None with a warning saying why it could not be measured."""
    from .latency import measure

    try:
        with hf.cache_off(job.model):
            return measure(fmt, exported, job, budget)
    except Exception as err:  # the artifact's runtime; parity already vouched for the artifact
        warnings.append(f"latency not measured: {type(err).__name__}: {first_line(err)}")
        return None


@contextlib.contextmanager
def typed_errors(step: str, format_name: str) -> Iterator[None]:
    """Raise what is not already a ``ModelSaveError`` (nor ``MemoryError``) as ``ExportError``.

    The formats turn the errors they expect into messages of their own; this is the net under
    them, so no raw exception from an exporter or a runtime leaves ``stage``.
    """
    try:
        yield
    except (ModelSaveError, MemoryError):
        raise
    except Exception as err:
        raise ExportError(
            f"The {step} of the {format_name} artifact failed: {type(err).__name__}: "
            f"{first_line(err)}. Try another format or exporter, or report the model."
        ) from err


def in_work_folder(build: Callable[[Path], StagedExport], progress: Progress) -> StagedExport:
    """``build`` a staged export in a new private work folder. Any failure, KeyboardInterrupt and
    a progress callback failing at "done" included, removes the folder."""
    workdir = Path(tempfile.mkdtemp(prefix="jms-stage-"))
    try:
        staged = build(workdir)
        progress("done", 1.0)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return staged


def export(model: Any, dest: str | Path, example_inputs: Any = None, *, name: str | None = None,
           version: str | None = None, overwrite: bool = False, allow_mismatch: bool = False,
           **options: Any) -> Path:  # fmt: skip
    """``stage`` then ``write``; raises ``ParityError`` when parity fails unless ``allow_mismatch``."""
    if name is None:
        name = _guess_name(model)
    if is_sharded(model):  # stage beside dest, so that writing is a rename
        from .distributed.export import export_sharded

        _refuse_variant(options.pop("precision", None), options.pop("calibration", None),
                        "sharded models")  # fmt: skip
        options.pop("latency", None)  # weights only: nothing to time

        return export_sharded(model, dest, example_inputs, name=name, version=version,
                              overwrite=overwrite, allow_mismatch=allow_mismatch, **options)  # fmt: skip
    staged = stage(model, example_inputs, name=name, **options)
    try:
        return staged.write(
            dest, version=version, overwrite=overwrite, allow_mismatch=allow_mismatch
        )
    finally:
        staged.discard()


def check_progress(progress: Any) -> Progress:
    """``progress`` as given (a callable), or ``no_progress`` for None."""
    if progress is None:
        return no_progress
    if not callable(progress):
        raise InvalidOptionError(
            f"progress must be a function progress(step: str, fraction: float), got {shown(progress)}."
        )
    return progress


def _check_model(model: Any) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise NotAModelError(
            f"Expected a torch.nn.Module, got {type(model).__name__}. jms.find_models() lists the "
            "models in your namespace."
        )
    return model


def _check_materialised(model: torch.nn.Module) -> None:
    """Refuse weights on the meta device: they have shapes but no values to export."""
    meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise InvalidOptionError(
            f"{len(meta)} weight(s) of {type(model).__name__} are on the meta device and hold no "
            f"values (first: {meta[0]}). Load the weights first, e.g. model.to_empty(device='cpu') "
            "then model.load_state_dict(...)."
        )


def _example_for(
    model: torch.nn.Module, example_inputs: Any, required: bool
) -> ExampleInputs | None:
    """The given inputs, else the last recorded call's; None when the format does not need any."""
    if example_inputs is None:
        recorded = last_inputs(model)
        if recorded is not None:
            return recorded
        if not required:
            return None
    return normalize_inputs(model, example_inputs)


def _float_dtype(model: torch.nn.Module) -> str:
    for p in model.parameters():
        if p.is_floating_point():
            return str(p.dtype).removeprefix("torch.")
    return "float32"


def _placed(
    model: torch.nn.Module, example: ExampleInputs | None, device: Any
) -> tuple[torch.nn.Module, ExampleInputs | None]:
    """The model to export (a copy when ``device`` differs from where it lives) and inputs on its device."""
    home = torch.device(device_of(model))
    if device is not None:
        try:
            target = torch.device(device)
        except (RuntimeError, TypeError, ValueError) as err:
            raise InvalidOptionError(
                f"device={shown(device)} is not a torch device: {err}"
            ) from None
        if target != home:
            model = copy.deepcopy(model).to(target)
            home = target
    if example is not None and any(t.device != home for t in example.tensors):
        example = example.to(home)
    return model, example


def _guess_name(model: Any) -> str:
    """The first public name bound to ``model`` in IPython's namespace or the caller's scope."""
    namespaces = []
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:
        namespaces.append(shell.user_ns)
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("jupyter_modelsave"):
        frame = frame.f_back
    if frame is not None:
        namespaces += [frame.f_locals, frame.f_globals]
    for ns in namespaces:
        for key, value in list(ns.items()):
            if value is model and not key.startswith("_"):
                return key
    return type(model).__name__.lower()
