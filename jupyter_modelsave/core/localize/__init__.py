"""Where does the artifact diverge? The first module of the live model whose output differs.

``localize`` compares the intermediate outputs of a staged artifact with the live model's,
module call by module call, on the parity probe that failed worst, and fills the report's
``layers`` (every compared call, in the order calls finish), ``first_divergence`` and
``localization`` (plain words). How values are found per format: ``_sides``; how ONNX values
are matched to modules: ``_onnx_scopes``; comparing with bounded memory: ``_compare``; naming
the module and its source line: ``_verdict``.

The live model runs on the probe in eval mode under ``no_grad`` (TF32 off) with forward hooks,
inside ``model_state.preserved``: hooks, training flags and values are as before afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._capture import captured_output, first_line
from ..errors import InvalidOptionError, ModelSaveError

if TYPE_CHECKING:
    from ..formats.base import Exported, ExportJob
    from ..parity import ParityReport
    from ..verify import Progress

FORMATS = ("onnx", "torchscript", "torch_export")


def localize(format_name: str, exported: Exported, job: ExportJob, report: ParityReport,
             progress: Progress | None = None) -> ParityReport:  # fmt: skip
    """Fill ``report.layers``, ``first_divergence`` and ``localization``; return ``report``."""
    if job.framework != "torch":
        raise InvalidOptionError(
            "Localization follows the modules of a PyTorch model through forward hooks; "
            "Keras and TensorFlow models are not localized (compare layer outputs with "
            "keras.Model(inputs, layer.output) yourself)."
        )
    if format_name not in FORMATS or report.kind != "outputs" or not report.probes:
        raise InvalidOptionError(
            f"Localization compares the intermediate outputs of graph artifacts "
            f"({', '.join(FORMATS)}); a {format_name} artifact is checked as a whole "
            "(its report already names every differing tensor)."
        )
    from .. import hf
    from ..discovery import recording_paused
    from ..model_state import preserved, reference_mode
    from ..verify import probes_for
    from ._compare import CallsChanged

    probe_name = worst_probe(report)
    probe = probes_for(job)[probe_name]
    if progress is not None:
        progress(f"localize: {probe_name}", 0.95)
    with (
        recording_paused(),
        preserved(job.model),
        reference_mode(),
        hf.cache_off(job.model),
        captured_output(),  # what torch.export.load and unflatten warn stays out of notebooks
    ):
        try:
            outcome = _compared(format_name, exported, job, report, probe_name, probe)
        except CallsChanged as err:
            report.layers, report.first_divergence = [], None
            report.localization = f"Not localized: {err}."
            return report
    text = outcome.text
    if report.passed and outcome.first is not None:
        text += " The final outputs still agree within the tolerances: later layers hide it."
    report.layers, report.first_divergence = outcome.layers, outcome.first
    report.localization = text
    return report


def after_failed_parity(format_name: str, exported: Exported, job: ExportJob,
                        report: ParityReport | None, progress: Progress | None = None) -> None:  # fmt: skip
    """``localize`` when ``report`` failed and the format can be localized; a failure of the
    localization itself becomes ``report.localization`` text (it never fails the stage)."""
    if report is None or report.passed or format_name not in FORMATS or report.kind != "outputs":
        return
    if job.framework != "torch":
        return
    try:
        localize(format_name, exported, job, report, progress)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as err:  # ORT, torch, onnx: many types; the parity report stands as it is
        kind = "" if isinstance(err, ModelSaveError) else f"{type(err).__name__}: "
        report.localization = f"Not localized: {kind}{first_line(err)}"


def worst_probe(report: ParityReport) -> str:
    """The probe that failed worst: failed first, then shapes that match, then by how many
    values and how far they differ."""

    def badness(probe: Any) -> tuple:
        outs = probe.outputs
        return (
            not probe.passed,
            not any(o.shape_mismatch for o in outs),
            max((o.mismatch_fraction for o in outs), default=0.0),
            max((o.max_abs for o in outs), default=0.0),
        )

    return max(report.probes, key=badness).name


def _compared(format_name: str, exported: Exported, job: ExportJob, report: ParityReport,
             probe_name: str, probe: Any) -> Any:  # fmt: skip
    from ..verify import live_outputs
    from ._calls import watched
    from ._compare import in_isolation, side_by_side
    from ._verdict import verdict

    modules = dict(job.model.named_modules())
    common = {"modules": modules, "conversions": report.value_conversions, "probe": probe_name}
    if format_name == "torchscript":
        from ..formats.torchscript import TorchScriptFormat
        from ._sides import torchscript_counterpart

        device = job.adapter.device_of(job.model)
        artifact = TorchScriptFormat().load(exported.path, device, trusted=True)
        calls, results = in_isolation(job.model, probe, torchscript_counterpart(artifact),
                                      report.atol, report.rtol)  # fmt: skip
        return verdict(calls, results, {}, mapped={},
                       how="; each submodule of the archive ran on its live counterpart's inputs",
                       **common)  # fmt: skip
    with watched(job.model) as calls:  # which calls the model makes, and their sizes
        live_outputs(job.adapter, job.model, probe)
    side = _side(format_name, exported, job, calls)
    results, inputs_differ = side_by_side(job.model, probe, calls, side, report.atol, report.rtol)
    return verdict(calls, results, inputs_differ, mapped=getattr(side, "mapped", {}), how="",
                   **common)  # fmt: skip


def _side(format_name: str, exported: Exported, job: ExportJob, calls: list[Any]) -> Any:
    from ._sides import OnnxSide, ProgramSide

    if format_name == "onnx":
        return OnnxSide(exported.path, calls, job.input_names, job.output_names)
    import torch

    from ..formats.torch_export import TorchExportFormat

    device = torch.device(job.adapter.device_of(job.model))
    return ProgramSide(TorchExportFormat().load(exported.path, device, trusted=True))
