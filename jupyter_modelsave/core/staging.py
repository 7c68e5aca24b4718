"""``stage``: export into a private work folder and prove parity; ``StagedExport.write``: accept it.

One flow for every framework: the model's adapter (``frameworks``) calls it and flattens its
outputs, the format (``formats``) exports and checks the artifact. Nothing touches the destination
before ``write``. The live model is left as it was: for PyTorch its device, dtypes, values,
training flags, ``requires_grad`` flags and hooks (see ``model_state.preserved``), also when stage
fails or is interrupted, and the work folder is then removed. The features below this module
hand back their parts (``generation_parts``; the sharded flow calls ``build``): it alone makes
``StagedExport``s, so nothing it imports imports it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import os
import shutil
import sys
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import artifacts, hashing, trust
from . import precision as variants
from ._capture import first_line
from .discovery import ipython_shell, recording_paused
from .distributed import collective_flow
from .errors import InvalidOptionError, ModelSaveError, ParityError, WriteError, typed_errors
from .formats import extensions, get_format
from .formats.base import ArtifactFormat, producer
from .frameworks import adapter_for
from .inputs import ExampleInputs, TensorSpec
from .job import Exported, ExportJob
from .latency import check_latency
from .options import (
    artifact_name_from,
    check_artifact_name,
    check_destination,
    check_dynamic_axes,
    check_flag,
    check_metadata,
    check_names,
    check_opset,
    check_tolerance,
    default_axis_name,
    default_tolerances,
)
from .parity import ParityReport
from .verify import Progress, check_progress, live_outputs, no_progress
from .version import __version__

if TYPE_CHECKING:
    from .distributed._collective import Collective
    from .distributed._layout import Layout
    from .distributed.export import Request


class StagedExport:
    """An exported artifact waiting in a private work folder, with its parity report."""

    def __init__(self, fmt: ArtifactFormat, exported: Exported, job: ExportJob, report: ParityReport | None,
                 name: str, warnings: list[str], output_specs: list[TensorSpec],
                 tolerances: tuple[float, float], generation: dict | None = None) -> None:  # fmt: skip
        self.format = fmt.name
        self.framework = job.framework
        self.exporter = exported.exporter
        self.opset = exported.opset
        self.path = exported.path
        self.report = report
        self.name = name
        self.warnings = warnings
        self.metadata = job.metadata
        self.input_specs = dataclasses.replace(job.example, names=job.input_names).specs
        self.output_specs = output_specs
        self.dynamic_axes = job.dynamic_axes
        self.size_bytes = hashing.size_of(self.path)
        # a format that hashed while writing (safetensors) says so; others are read once here
        self.file_hashes = exported.file_hashes or hashing.file_hashes(self.path)
        self.sha256 = hashing.combined_sha256(self.path, self.file_hashes)
        self._extension = fmt.extension
        self.tolerances = tolerances  # (atol, rtol) of the last parity check
        self._job = job
        self._verify_again = lambda atol, rtol: fmt.verify(exported, job, atol, rtol, no_progress)
        self._localize = functools.partial(_localized, fmt.name, exported, job)
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(job.workdir), True)
        # the release check (``core/precision.py``, ``latency.py``, ``diff.py``); ``stage`` sets them
        self.precision = job.precision
        self.variant: dict[str, Any] | None = None  # how a variant was made, and its size vs fp32
        self.latency: dict[str, Any] | None = None
        self._parts = (fmt, exported, job)  # what ``diff`` runs and loads
        self._diffs: dict[tuple, dict[str, Any]] = {}
        # tolerances given to stage or verify: an int8 variant is then judged element-wise too
        self._judging = {"element_wise": False}
        self.generation = generation  # a generation=True export's plan (``core/generation``)

    @property
    def discarded(self) -> bool:
        return not self._cleanup.alive

    @recording_paused()  # its forward calls are jms's own, not the user's
    def verify(self, *, atol: float | None = None, rtol: float | None = None) -> ParityReport:
        """Check parity again (e.g. with other tolerances) without exporting again.

        Tolerances default to the last ones used; the new report replaces ``self.report``.
        Tolerances given here apply to every output (not by each output's dtype).
        """
        if self.discarded:
            raise InvalidOptionError("This export was discarded; stage it again to verify it.")
        given = atol is not None or rtol is not None
        atol = self.tolerances[0] if atol is None else check_tolerance("atol", atol)
        rtol = self.tolerances[1] if rtol is None else check_tolerance("rtol", rtol)
        if given:  # for every output
            self._job.output_tolerances = {}
            self._judging["element_wise"] = True
        with typed_errors("parity check", self.format):
            self.report = self._verify_again(atol, rtol)
            self._localize(self.report, quietly=True)
        self.tolerances = (atol, rtol)
        return self.report

    @recording_paused()
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
            previous, expanded = None, os.path.expanduser(str(dest))
            if artifacts.is_folder_destination(expanded, self._extension):
                previous = self.diff(dest, name=name)
            else:
                _check_file_extension(Path(expanded).name, self._extension, self.format)
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

    @recording_paused()
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
                self._diffs[key] = compare(self._signature_fields(), self._parts, previous)
        return self._diffs[key]

    def _signature_fields(self) -> dict[str, Any]:
        """What ``diff`` compares with the previous version's manifest."""
        return {
            "inputs": [s.to_dict() for s in self.input_specs],
            "outputs": [s.to_dict() for s in self.output_specs],
            "dynamic_axes": {
                k: {str(d): a for d, a in v.items()} for k, v in self.dynamic_axes.items()
            },
            **{key: getattr(self, key) for key in ("opset", "format", "precision", "size_bytes")},
        }

    def manifest(self, name: str, version: str) -> dict[str, Any]:
        return {
            "producer": "jupyter_modelsave",
            "name": name,
            "version": version,
            "format": self.format,
            "framework": self.framework,
            "exporter": self.exporter,
            "opset": self.opset,
            "sha256": self.sha256,
            "signature": trust.sign(self.sha256, self.format),
            "size_bytes": self.size_bytes,
            "files": self.file_hashes,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions(self._job.adapter.versions()),
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
        } | ({} if self.generation is None else {"generation": self.generation})

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


class ShardedStagedExport(StagedExport):
    """A sharded model's staged export (``core/distributed/export.py``); the same object (same
    sha256, same report) on every rank.

    ``write`` and ``verify`` are collective: call them on every rank. The staged folder belongs to
    rank 0: ``discard`` there (or garbage collection) deletes it; on other ranks it does nothing.
    """

    def __init__(self, coll: Collective, model: Any, folder: Path, hashes: dict[str, str],
                 report: ParityReport | None, request: Request, slices: tuple[Layout, dict],
                 distributed: dict[str, Any]) -> None:  # fmt: skip
        from .distributed.export import EXPORTER

        job = ExportJob(model, ExampleInputs(()), [], [], {}, None, "auto", request.metadata,
                        folder, None, request.format_options)  # fmt: skip
        exported = Exported(folder, EXPORTER, file_hashes=hashes)
        fmt = get_format("safetensors", "torch")
        super().__init__(fmt, exported, job, report, request.name, [], [], (0.0, 0.0))
        self.distributed = distributed
        self._timeout = coll.timeout
        self._slices = slices
        self._verify_again = lambda atol, rtol: self._parity_again()
        if not coll.is_coordinator:  # the folder is rank 0's to delete
            self._cleanup.detach()
            self._cleanup = weakref.finalize(self, lambda: None)

    def write(self, dest: str | Path, **options: Any) -> Path:  # type: ignore[override]
        """``StagedExport.write`` on rank 0, collectively: every rank returns the same path."""
        if self.report is not None and not self.report.passed and not options.get("allow_mismatch"):
            raise ParityError(  # every rank holds the same report: raise it everywhere, with why
                f"Not written: {self.report.summary()}: {' '.join(self.report.diagnosis[:3])} "
                "Look at staged.report, or pass allow_mismatch=True to write it anyway.",
                self.report,
            )
        from .distributed._collective import joined

        with joined("StagedExport.write", self._timeout) as coll:
            return Path(
                coll.from_coordinator(lambda: str(StagedExport.write(self, dest, **options)))
            )

    def manifest(self, name: str, version: str) -> dict[str, Any]:
        return {**super().manifest(name, version), "distributed": self.distributed}

    def _parity_again(self) -> ParityReport:
        from .distributed._collective import joined
        from .distributed.export import parity_again

        with joined("StagedExport.verify", self._timeout) as coll:
            return parity_again(coll, self.path, *self._slices)


@recording_paused()
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
    device: Any = None,
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

    ``example_inputs``: as you call the model (for PyTorch a tensor, tuple of tensors or dict of
    keyword tensors); default, the inputs of the last recorded forward call (PyTorch) or random
    inputs of the declared shapes (Keras); weight formats run without any, and skip the forward
    pass. ``device``: export a copy of a PyTorch model on that device (the live model never
    moves); default, where the model lives. See the README for every option. Other keyword
    arguments are options of the chosen format (``format_options``).
    ``generation=True``: ONNX graphs with past key values for a transformers language model,
    checked on a greedy loop (``core.generation.staging.generation_parts``).

    The release check (models of adapters with ``release_check``: PyTorch's): ``precision``
    ("fp32", "fp16", "bf16", "int8"; default the model's own) stages a variant judged against
    the live model (``core/precision.py``; ``calibration=True`` or a list of inputs: static
    int8); ``latency`` (True, False, or ``{"max_runs", "max_seconds"}``) measures a graph
    artifact against the model eager (``core/latency.py``).
    """
    adapter = adapter_for(model)
    generation = check_flag("generation", generation)
    if generation or not adapter.release_check:
        _refuse_variant(
            precision, calibration, "generation exports" if generation else adapter.noun
        )
    name = name if name is not None else _guess_name(model)
    if not generation and adapter.shards and (collective := collective_flow(model)) is not None:
        _refuse_variant(precision, calibration, "sharded models")  # every rank stages it together
        return collective.stage(model, example_inputs, build=ShardedStagedExport, stage_whole=stage,
                                format=format, opset=opset,
                                dynamic_axes=dynamic_axes, input_names=input_names,
                                output_names=output_names, parity=parity, atol=atol, rtol=rtol,
                                metadata=metadata, device=device, exporter=exporter, name=name,
                                external_data=external_data, progress=progress, **format_options)  # fmt: skip
    progress = check_progress(progress)
    progress("prepare", 0.0)
    fmt = get_format(format, adapter.name)
    own = adapter.check_options(device=device, exporter=exporter, external_data=external_data)
    opset = check_opset(opset, adapter, own["exporter"])
    atol = None if atol is None else check_tolerance("atol", atol)
    rtol = None if rtol is None else check_tolerance("rtol", rtol)
    meta = check_metadata(metadata)
    clash = [k for k in meta if k in {*producer(adapter.name), "inputs", "outputs"}]
    if clash:
        raise InvalidOptionError(f"metadata keys {clash} are reserved; rename them.")
    name = check_artifact_name(name)
    if generation:  # ONNX with past key values: graphs of fixed names, a greedy-loop parity
        from .generation.staging import generation_parts

        fixed = {"dynamic_axes": dynamic_axes, "input_names": input_names,
                 "output_names": output_names}  # fmt: skip
        parts = generation_parts(model, example_inputs, fmt, opset=opset, exporter=own["exporter"],
                                 external_data=own["external_data"], metadata=meta, name=name,
                                 atol=atol, rtol=rtol, parity=parity, device=device,
                                 progress=progress, fixed=fixed, **format_options)  # fmt: skip
        return in_work_folder(lambda workdir: StagedExport(*parts(workdir)), progress)
    fmt_options = fmt.check_options(format_options)
    own_precision = variants.own_precision(model)
    precision = variants.check(precision, fmt, own_precision)
    calibration = variants.check_calibration(calibration, precision)
    graph = fmt.capabilities.kind == "graph"
    budget = check_latency(latency) if adapter.release_check else None
    variant = precision != own_precision
    judging = {"element_wise": atol is not None or rtol is not None}
    if variant and graph:  # a variant is judged by its precision's tolerances by default
        rule_atol, rule_rtol = variants.tolerances(precision)
        atol, rtol = (rule_atol if atol is None else atol, rule_rtol if rtol is None else rtol)
    given = adapter.example(model, example_inputs, fmt.capabilities.needs_inputs)
    model, example = adapter.placed(model, given and given.inputs, device)
    runs = example is not None  # else a weight format without inputs: nothing to run or name
    adapter.check_ready(model, runs)
    example = example if runs else ExampleInputs(())
    in_names = check_names("input_names", input_names, len(example.names)) or example.names
    note = given.note if given else ""
    if dynamic_axes is None and given and given.declared_dynamic:
        dynamic_axes, kept = _declared_axes(in_names, given.declared_dynamic)
        note += kept
    notes = [note] if note else []  # what jms chose or changed for this export, first
    with adapter.staging(model) as changed:  # export and parity: one forward pass, no cache
        notes += changed
        live_names, live = [], []
        if runs:
            with adapter.kept(model):
                live_names, live = live_outputs(adapter, model, example)
        out_names = check_names("output_names", output_names, len(live_names)) or live_names
        axes = check_dynamic_axes(dynamic_axes, dataclasses.replace(example, names=in_names),
                                  out_names)  # fmt: skip
        job = ExportJob(model, example, in_names, out_names, axes, opset, own["exporter"], meta,
                        Path(), own["external_data"], fmt_options, live if runs else None,
                        adapter.name, progress=progress, precision=precision)  # fmt: skip
        tolerances = _tolerances(job, adapter.reference_dtypes(model, live), atol, rtol, notes)

        def build(workdir: Path) -> StagedExport:
            job.workdir = workdir
            progress("export", 0.1)
            with adapter.kept(model, exporting=True), typed_errors("export", fmt.name):
                exported = fmt.export(job)
            made = None
            if variant:
                progress(f"{precision} variant", 0.5)
                with typed_errors(f"{precision} conversion", fmt.name):
                    exported, made = variants.make(fmt, exported, job, calibration)

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
                    report = check(*tolerances, progress)
                    _localized(fmt.name, exported, job, report, progress, quietly=True)
            job.example_outputs = None  # a later verify() runs the model as it is then
            warnings = [*notes, *exported.warnings]
            measured = None
            if budget is not None and runs and graph:
                progress("latency", 0.95)
                measured = _latency(fmt, exported, job, budget, warnings)
            specs = [adapter.spec(n, v) for n, v in zip(out_names, live)]
            staged = StagedExport(fmt, exported, job, report, name, warnings, specs, tolerances)
            staged.variant, staged.latency, staged._judging = made, measured, judging
            staged._verify_again = lambda a, r: check(a, r, no_progress)
            return staged

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
        return measure(fmt, exported, job, budget)
    except Exception as err:  # the artifact's runtime; parity already vouched for the artifact
        warnings.append(f"latency not measured: {type(err).__name__}: {first_line(err)}")
        return None


def _declared_axes(names: list[str], declared: list[list[int]]) -> tuple[Any, str]:
    """The dims a model declares dynamic (Keras' None dims) as dynamic axes, and a note naming
    them (axis names from ``options.default_axis_name``)."""
    if len(declared) != len(names):
        return None, ""
    axes = {name: {d: default_axis_name(name, d) for d in dims}
            for name, dims in zip(names, declared) if dims}  # fmt: skip
    kept = ", ".join(f"{n}:{d}={a}" for n, dims in axes.items() for d, a in dims.items())
    return axes or None, f"; the None dims stay dynamic ({kept})" if kept else ""


def _tolerances(job: ExportJob, dtypes: list[str], atol: float | None, rtol: float | None,
                notes: list[str]) -> tuple[float, float]:  # fmt: skip
    """The report's (atol, rtol), and in ``job.output_tolerances`` those of outputs judged by
    their own dtype's defaults (a float16 or bfloat16 output of a mixed-precision Keras model).

    Tolerances you give apply to every output; a default one comes from the output's reference
    dtype (``Adapter.reference_dtypes``). The report shows the loosest used; ``notes`` names
    the outputs judged otherwise.
    """
    dtypes = dtypes or [job.adapter.float_dtype(job.model)]  # no outputs ran: the weights'
    defaults = [default_tolerances(d) for d in dtypes]
    used = [(a if atol is None else atol, r if rtol is None else rtol) for a, r in defaults]
    loosest = max(used)
    job.output_tolerances = {n: t for n, t in zip(job.output_names, used) if t != loosest}
    if job.output_tolerances or len(set(dtypes)) > 1:
        each = zip(job.output_names, dtypes, used)
        notes.append("parity tolerances by output dtype: "
                     + ", ".join(f"{n} ({d}) atol={a:g} rtol={r:g}" for n, d, (a, r) in each))  # fmt: skip
    return loosest


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
    name = name if name is not None else _guess_name(model)
    if adapter_for(model).shards and (collective := collective_flow(model)) is not None:
        _refuse_variant(options.pop("precision", None), options.pop("calibration", None),
                        "sharded models")  # fmt: skip
        options.pop("latency", None)  # weights only: nothing to time
        return collective.export(model, dest, example_inputs, build=ShardedStagedExport,
                                 stage_whole=stage, name=name, version=version,
                                 overwrite=overwrite, allow_mismatch=allow_mismatch, **options)  # fmt: skip
    staged = stage(model, example_inputs, name=name, **options)
    try:
        return staged.write(
            dest, version=version, overwrite=overwrite, allow_mismatch=allow_mismatch
        )
    finally:
        staged.discard()


def _versions(framework: dict[str, str]) -> dict[str, str]:
    """What a manifest records: jms', the framework's, the ONNX tools' used (imported), Python's."""
    tools = {m: getattr(sys.modules.get(m), "__version__", None) for m in ("onnx", "tf2onnx")}
    tools = {m: str(v) for m, v in tools.items() if v}
    return {
        "jupyter_modelsave": __version__,
        **framework,
        **tools,
        "python": sys.version.split()[0],
    }


def _check_file_extension(file_name: str, extension: str, fmt: str) -> None:
    """A file path may not end in another format's extension (a state dict named model.onnx),
    nor in ``.json``, which names manifests (``x.pt.json`` is the manifest ``x.pt`` gets); one no
    format uses (``.bin``, ``.pth``) is the user's choice."""
    reserved = {e: "another format's extension" for e in extensions()} | {".json": "a manifest's"}
    taken = [e for e in reserved if file_name.endswith(e) and not file_name.endswith(extension)]
    if taken:
        other = max(taken, key=len)
        stem = file_name.removesuffix(other)
        instead = stem if stem.endswith(extension) else f"{stem}{extension}"
        raise InvalidOptionError(
            f"{file_name} ends in {other}, {reserved[other]} extension, but this is a {fmt} "
            f"artifact ({extension}): write it to {instead}, or to a folder (a path ending in "
            "'/') to get a versioned name."
        )


_OWN_FRAMES = ("jupyter_modelsave", "contextlib")


def _guess_name(model: Any) -> str:
    """The first public name bound to ``model`` in IPython's namespace or the caller's scope (else
    its class name), made usable in a file name (``options.artifact_name_from``)."""
    shell = ipython_shell()
    namespaces = [] if shell is None else [shell.user_ns]
    frame = sys._getframe(1)
    # past our own frames and contextlib's (``recording_paused`` decorates ``stage``)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(_OWN_FRAMES):
        frame = frame.f_back
    if frame is not None:
        namespaces += [frame.f_locals, frame.f_globals]
    for ns in namespaces:
        for key, value in list(ns.items()):
            if value is model and not key.startswith("_"):
                return artifact_name_from(key)
    return artifact_name_from(type(model).__name__.lower())
