"""Precision variants: an artifact in fp16, bf16 or int8, judged against the live model.

A format declares the precisions it can write (``Capabilities.precisions``); the runtime may
take fewer (``ArtifactFormat.precisions_here``: ONNX Runtime's CPU provider has no bf16
kernels). ``check`` refuses what the format or the runtime cannot do, naming what they take.

How each variant is made (the live model is never cast or moved):

- ONNX fp16: ONNX Runtime's float16 converter (``onnxruntime.transformers.float16``, the
  maintained successor of onnxconverter-common's), weights and compute in fp16, inputs and
  outputs kept in the model's dtype (``keep_io_types``), operators without fp16 kernels kept in
  fp32 behind casts (its default block list).
- ONNX bf16: the same conversion, then every fp16 type relabelled bf16 and every converted
  weight rounded from its fp32 value (round to nearest even, by torch). Only where ONNX Runtime
  has bf16 kernels (its CUDA provider).
- ONNX int8: ONNX Runtime's quantization: ``quantize_dynamic`` (int8 weights, activations
  quantized at run time), or with ``calibration=`` ``quantize_static`` (QDQ, int8 activations
  and weights) calibrated on the example, the parity probes and any inputs given.
- safetensors fp16/bf16: a cast copy of the state dict (tied weights stay tied); integer and
  bool tensors are kept as they are.

Parity compares the variant with the live model in its own dtype. fp16 and bf16 are judged
element-wise with looser tolerances (``RULES``) *and* by task-level agreement; int8 by agreement
only (quantization moves every value by up to a quantization step of its tensor's range, so an
element-wise tolerance would be arbitrary), unless ``atol``/``rtol`` are given. Agreement is
top-1 agreement pooled over every probe's rows for class-score outputs (2-d ``[batch,
classes]``, or an output whose name contains ``logits``), the worst probe's cosine similarity
for the rest.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _ort
from .errors import ExportError, InvalidOptionError, shown
from .formats.base import CAST_DTYPES

if TYPE_CHECKING:
    import torch

    from .formats.base import ArtifactFormat, Exported, ExportJob
    from .parity import OutputDiff, ParityReport, ProbeResult

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# a model's own floating dtype -> its precision name (the default variant: no conversion)
OWN_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}


@dataclass(frozen=True)
class Rule:
    """How a precision's variant is judged against the live model."""

    atol: float  # element-wise tolerances (for int8 only shown, unless given explicitly)
    rtol: float
    top1: float  # least pooled top-1 agreement of class-score outputs
    cosine: float  # least cosine similarity of other outputs, on every probe
    element_wise: bool = True  # whether the element-wise check counts by default


RULES: dict[str, Rule] = {
    "fp16": Rule(1e-2, 1e-2, top1=0.99, cosine=0.999),
    "bf16": Rule(5e-2, 5e-2, top1=0.98, cosine=0.995),
    "int8": Rule(1e-1, 1e-1, top1=0.90, cosine=0.99, element_wise=False),
}
# weights cast to a half type: bitwise equal to the cast, and within half a unit in the last
# place of it (rtol) or below its smallest normal number (atol), i.e. no overflow to inf
CAST_TOLERANCES = {"fp16": (2.0**-14, 2.0**-11), "bf16": (2.0**-126, 2.0**-8)}


def own_precision(model: Any) -> str:
    """The precision of a model's first floating weight (``fp32`` for models without one)."""
    from .frameworks import adapter_for

    return OWN_PRECISION.get(adapter_for(model).float_dtype(model), "fp32")


def precisions(format: str = "onnx", framework: str = "torch") -> list[str]:
    """The precisions ``stage(precision=...)`` takes for a float32 model of ``framework`` in
    ``format`` on this machine: what the format declares (``Capabilities.precisions``), less
    what the runtime cannot run (``ArtifactFormat.precisions_here``)."""
    from .formats import get_format

    return list(get_format(format, framework).precisions_here())


def check(precision: Any, fmt: ArtifactFormat, own: str) -> str:
    """The precision to stage (``None``: the model's own), or ``InvalidOptionError`` saying
    which precisions the format and the runtime take."""
    if precision is None or precision == own:
        return own
    if precision not in PRECISIONS:
        raise InvalidOptionError(
            f"precision={shown(precision)} is not one of {', '.join(PRECISIONS)} (default: the "
            f"model's own, here {own})."
        )
    declared = fmt.capabilities.precisions
    if precision not in declared:
        raise InvalidOptionError(
            f"format {fmt.name!r} takes precision {', '.join(declared)}, not {precision!r}. "
            + _formats_taking(precision)
        )
    if own != "fp32":
        raise InvalidOptionError(
            f"precision variants are made from a float32 model; this one is {own}. Stage it "
            f"without precision=, or make a float32 copy (model.float()) first."
        )
    available = fmt.precisions_here()
    if precision not in available:
        raise InvalidOptionError(
            f"precision={precision!r}: format {fmt.name!r} takes {', '.join(declared)}, but this "
            f"ONNX Runtime ({', '.join(_ort.providers())}) has no {precision} kernels, so here it "
            f"takes {', '.join(available)}. Install onnxruntime-gpu on a CUDA machine for "
            f"{precision}, or choose fp16."
        )
    return precision


def _formats_taking(precision: str) -> str:
    from .formats import REGISTRY, get_format

    names = [n for n, impls in REGISTRY.items() if "torch" in impls
             and precision in get_format(n, "torch").capabilities.precisions]  # fmt: skip
    return f"Formats with {precision}: {', '.join(names)}." if names else ""


def check_calibration(calibration: Any, precision: str) -> Any:
    """``None`` (dynamic int8), ``True`` (static, on the example and probes) or a list of extra
    example inputs (each as ``example_inputs`` takes it)."""
    if calibration is None or calibration is False:
        return None
    if precision != "int8":
        raise InvalidOptionError(
            f"calibration= applies to precision='int8' only, not {precision!r}."
        )
    if calibration is True or isinstance(calibration, (list, tuple)):
        return calibration
    raise InvalidOptionError(
        f"calibration must be True (calibrate on the example and the parity probes) or a list of "
        f"example inputs, got {shown(calibration)}."
    )


# --- making the variant ---


def make(fmt: ArtifactFormat, exported: Exported, job: ExportJob,
         calibration: Any = None) -> tuple[Exported, dict[str, Any]]:  # fmt: skip
    """The staged artifact as ``job.precision`` (ONNX: converted here; weight formats were cast
    while exporting), and what the manifest records of it (``variant``)."""
    from . import hashing

    fp32_bytes = None
    if fmt.name == "onnx":
        fp32_bytes = hashing.size_of(exported.path)
        exported, notes = convert_onnx(exported, job, job.precision, calibration)
        exported.warnings = [*exported.warnings, *notes]
    size = hashing.size_of(exported.path)
    return exported, {
        "precision": job.precision,
        "from": own_precision(job.model),
        "method": _method(fmt.name, job.precision, calibration),
        "fp32_size_bytes": fp32_bytes,
        "size_ratio": None if not fp32_bytes else round(size / fp32_bytes, 4),
    }


def _method(format_name: str, precision: str, calibration: Any) -> str:
    if format_name != "onnx":
        return f"cast copy of the floating tensors to {CAST_DTYPES[precision]}"
    if precision == "int8":
        if calibration is None:
            return "onnxruntime quantize_dynamic (int8 weights, activations at run time)"
        return "onnxruntime quantize_static (QDQ int8, calibrated on the example and probes)"
    relabel = ", relabelled bf16" if precision == "bf16" else ""
    return f"onnxruntime float16 converter{relabel} (inputs and outputs kept in the model's dtype)"


def convert_onnx(exported: Exported, job: ExportJob, precision: str,
                 calibration: Any = None) -> tuple[Exported, list[str]]:  # fmt: skip
    """The ONNX artifact converted to ``precision`` in the work folder (the fp32 file removed),
    and notes for the warnings. Keeps the artifact's layout (one file, or a folder with data)."""
    import onnx

    from .artifacts import _remove
    from .formats.onnx import DATA_FILE, MODEL_FILE

    folder = exported.path.is_dir()
    source = exported.path / MODEL_FILE if folder else exported.path
    target_dir = job.workdir / f"{precision}.onnx" if folder else job.workdir
    target_dir.mkdir(exist_ok=True)
    target = target_dir / (MODEL_FILE if folder else f"model.{precision}.onnx")
    from ._capture import captured_output, first_line

    with captured_output() as lines:
        try:
            if precision == "int8":
                _quantize(source, target, job, calibration, folder)
            else:
                proto = onnx.load(str(source), load_external_data=True)
                notes = _clamped_note(proto) if precision == "fp16" else []
                converted = _half(proto, precision)
                onnx.save_model(converted, str(target), save_as_external_data=folder,
                                all_tensors_to_one_file=True, location=DATA_FILE)  # fmt: skip
                lines.extend(notes)
            onnx.checker.check_model(str(target))
        except (ExportError, InvalidOptionError):
            raise
        except Exception as err:  # converters raise many unrelated types
            raise ExportError(
                f"The {precision} conversion of the ONNX graph failed: {type(err).__name__}: "
                f"{first_line(err)}. Stage it in fp32, or report the model."
            ) from err
    _remove(exported.path)
    notes = [f"{precision}: {line}" for line in lines if "pre-processing before quantization"
             not in line and "onnxruntime-inference-examples" not in line]  # fmt: skip
    return replace(exported, path=target_dir if folder else target, file_hashes=None), notes


def _half(proto: Any, precision: str) -> Any:
    """fp16 with ONNX Runtime's converter; bf16: that graph relabelled, weights from fp32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    originals = _float_tensors(proto) if precision == "bf16" else {}
    from onnxruntime.transformers.onnx_model import OnnxModel

    converted = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)
    # the converter appends the input casts after the nodes that read them: sort, as the
    # ONNX spec (and onnx.checker) asks
    try:
        OnnxModel(converted).topological_sort(is_deterministic=True)  # the same bytes each time
    except TypeError:  # onnxruntime before is_deterministic
        OnnxModel(converted).topological_sort()
    if precision == "bf16":
        _relabel_bf16(converted, originals)
    return converted


def _float_tensors(proto: Any) -> dict[str, Any]:
    """fp32 initializers and Constant values by name, as numpy arrays (before conversion)."""
    from onnx import TensorProto, numpy_helper

    found = {t.name: numpy_helper.to_array(t) for t in _initializers(proto.graph)
             if t.data_type == TensorProto.FLOAT}  # fmt: skip
    for node in _nodes(proto.graph):
        for attr in node.attribute:
            if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                found[f"{node.name}/{node.output[0]}"] = numpy_helper.to_array(attr.t)
    return found


def _relabel_bf16(proto: Any, originals: dict[str, Any]) -> None:
    """Turn every fp16 type of a converted graph into bf16; weights rounded from fp32."""
    from onnx import TensorProto

    half, bf16 = TensorProto.FLOAT16, TensorProto.BFLOAT16
    for tensor in _initializers(proto.graph):
        if tensor.data_type == half:
            _set_bf16(tensor, originals.get(tensor.name))
    for graph in _graphs(proto.graph):
        for value in [*graph.input, *graph.output, *graph.value_info]:
            if value.type.tensor_type.elem_type == half:
                value.type.tensor_type.elem_type = bf16
    for node in _nodes(proto.graph):
        for attr in node.attribute:
            if attr.name == "to" and attr.i == half:
                attr.i = bf16
            if attr.name == "value" and attr.t.data_type == half:
                _set_bf16(attr.t, originals.get(f"{node.name}/{node.output[0]}"))


def _set_bf16(tensor: Any, fp32: Any) -> None:
    """Store ``fp32`` (or the tensor's own fp16 values) as bf16 bits in ``tensor``."""
    import numpy as np
    import torch
    from onnx import TensorProto, numpy_helper

    values = fp32 if fp32 is not None else numpy_helper.to_array(tensor).astype(np.float32)
    bits = torch.from_numpy(np.array(values, dtype=np.float32)).to(torch.bfloat16)  # a copy
    raw = bits.view(torch.int16).numpy().tobytes()
    for field in ("float_data", "int32_data", "raw_data"):
        tensor.ClearField(field)
    tensor.data_type = TensorProto.BFLOAT16
    tensor.raw_data = raw


def _graphs(graph: Any) -> Iterable[Any]:
    """A graph and its subgraphs (If/Loop/Scan bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.g.node or attr.g.input:
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _nodes(graph: Any) -> Iterable[Any]:
    for g in _graphs(graph):
        yield from g.node


def _initializers(graph: Any) -> Iterable[Any]:
    for g in _graphs(graph):
        yield from g.initializer


def _clamped_note(proto: Any) -> list[str]:
    """A note when weights lie outside fp16's range (the converter clamps them to ±65504)."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    over = sum(int(np.count_nonzero(np.abs(numpy_helper.to_array(t)) > 65504))
               for t in _initializers(proto.graph) if t.data_type == TensorProto.FLOAT)  # fmt: skip
    if not over:
        return []
    return [f"{over} weight values exceed fp16's range and were clamped to ±65504; check the "
            "parity report, or use bf16."]  # fmt: skip


def _quantize(source: Path, target: Path, job: ExportJob, calibration: Any, large: bool) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    with _without_preprocessing_advice():
        if calibration is None:
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                             use_external_data_format=large)  # fmt: skip
            return
        reader = _CalibrationReader(_calibration_feeds(job, calibration))
        quantize_static(str(source), str(target), reader, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        use_external_data_format=large)  # fmt: skip


@contextlib.contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    """Drop ORT's "consider pre-processing before quantization" line, logged on the root logger
    at every call (its pre-processing is shape inference and graph optimisation: the graph is
    quantized as exported, and parity judges the result)."""
    import logging

    def keep(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in str(record.msg)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _calibration_feeds(job: ExportJob, calibration: Any) -> list[dict[str, Any]]:
    """ONNX feeds for calibration: the example, the parity probes and the inputs given."""
    from .inputs import normalize_inputs
    from .verify import probes_for

    probes = list(probes_for(job).values())
    if isinstance(calibration, (list, tuple)):
        for i, item in enumerate(calibration):
            try:
                extra = normalize_inputs(job.model, item)
            except InvalidOptionError as err:
                raise InvalidOptionError(f"calibration[{i}]: {err}") from None
            _check_like_example(f"calibration[{i}]", extra, job)
            probes.append(extra)
    return [{n: t.detach().cpu().numpy() for n, t in zip(job.input_names, p.tensors)}
            for p in probes]  # fmt: skip


def _check_like_example(what: str, inputs: Any, job: ExportJob) -> None:
    """Calibration inputs must fit the graph: the example's dtypes, and its sizes but on the
    dynamic axes."""
    given, wanted = inputs.specs, job.example.specs
    if len(given) != len(wanted):
        raise InvalidOptionError(f"{what} has {len(given)} inputs; the model takes {len(wanted)}.")
    for name, got, spec in zip(job.input_names, given, wanted):
        free = job.dynamic_axes.get(name, {})
        fits = len(got.shape) == len(spec.shape) and all(
            d in free or a == b for d, (a, b) in enumerate(zip(got.shape, spec.shape))
        )
        if got.dtype != spec.dtype or not fits:
            raise InvalidOptionError(
                f"{what}: input {name!r} is {got.dtype} {list(got.shape)}; the graph takes "
                f"{spec.dtype} {list(spec.shape)} (other sizes only on its dynamic axes "
                f"{free or 'none'}). Pass inputs like the example, or mark the axis dynamic."
            )


class _CalibrationReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over a list of feeds."""

    def __init__(self, feeds: list[dict[str, Any]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # not needed for one pass; part of the protocol
        pass

    def set_range(self, start_index: int, end_index: int) -> None:
        pass

    def __len__(self) -> int:  # some ORT versions ask
        return 0


# --- judging the variant ---


def verify(fmt: ArtifactFormat, exported: Exported, job: ExportJob, atol: float, rtol: float,
           progress: Callable[[str, float], None], precision: str,
           element_wise: bool) -> ParityReport:  # fmt: skip
    """Parity of a variant against the live model, judged by its precision's rule."""
    from .formats.base import WeightsFormat

    if isinstance(fmt, WeightsFormat) and precision in CAST_DTYPES:
        return cast_weights_parity(job.model, fmt.weights(fmt.load(exported.path)), precision)
    report = fmt.verify(exported, job, atol, rtol, progress)
    return judge(report, precision, element_wise)


def tolerances(precision: str) -> tuple[float, float] | None:
    rule = RULES.get(precision)
    return None if rule is None else (rule.atol, rule.rtol)


def is_class_scores(name: str, shape: list[int]) -> bool:
    """``[batch, classes]`` outputs, or any output named like ``logits`` (``[batch, seq, vocab]``)."""
    if len(shape) < 2 or shape[-1] < 2:
        return False
    return len(shape) == 2 or "logits" in name.lower()


def judge(report: ParityReport, precision: str, element_wise: bool = True) -> ParityReport:
    """Add task-level agreement to an outputs report and decide it by ``precision``'s rule.

    fp16/bf16: an output passes when its element-wise check and its agreement pass; int8: when
    its agreement passes (and the element-wise check too if ``element_wise``, i.e. tolerances
    were given). Returns the same report, updated.
    """
    from .parity import diagnose

    report.precision = precision
    rule = RULES.get(precision)
    if rule is None or report.kind != "outputs":
        return report
    element_wise = element_wise or rule.element_wise
    agreement = {name: _agreement(name, diffs, rule) for name, diffs in _by_output(report).items()}
    for probe in report.probes:
        for out in probe.outputs:
            values_ok = out.passed if element_wise else out.shape_mismatch is None
            out.passed = values_ok and agreement[out.name]["passed"]
        probe.passed = all(o.passed for o in probe.outputs)
    report.passed = all(p.passed for p in report.probes) and not report.value_conversions
    report.agreement = {"element_wise": element_wise, "outputs": agreement}
    shown_probes = report.probes if element_wise else _shape_failures_only(report.probes)
    element_notes = diagnose(report.probes, report.atol, report.rtol)
    kept = [n for n in report.diagnosis if n not in element_notes]
    report.diagnosis = [*kept, *_agreement_notes(precision, agreement, element_wise),
                        *diagnose(shown_probes, report.atol, report.rtol)]  # fmt: skip
    return report


def _by_output(report: ParityReport) -> dict[str, list[OutputDiff]]:
    found: dict[str, list[OutputDiff]] = {}
    for probe in report.probes:
        for out in probe.outputs:
            found.setdefault(out.name, []).append(out)
    return found


def _agreement(name: str, diffs: list[OutputDiff], rule: Rule) -> dict[str, Any]:
    """Pooled top-1 agreement (class scores) or the least cosine, against the rule's threshold."""
    if any(d.shape_mismatch for d in diffs):
        return {"metric": "shape", "value": None, "threshold": None, "passed": False}
    if all(is_class_scores(name, d.shape) and d.top1_agreement is not None for d in diffs):
        rows = [math.prod(d.shape[:-1]) for d in diffs]
        agreed = sum(d.top1_agreement * r for d, r in zip(diffs, rows))  # type: ignore[operator]
        value = agreed / sum(rows) if sum(rows) else 1.0
        return {"metric": "top1", "value": value, "threshold": rule.top1,
                "passed": value >= rule.top1, "rows": sum(rows)}  # fmt: skip
    value = min(d.cosine for d in diffs)
    passed = not math.isnan(value) and value >= rule.cosine
    return {"metric": "cosine", "value": value, "threshold": rule.cosine, "passed": passed}


def _shape_failures_only(probes: list[ProbeResult]) -> list[ProbeResult]:
    """Copies of the probes where only shape mismatches fail (for the element-wise diagnosis)."""
    from .parity import ProbeResult

    copies = []
    for probe in probes:
        outs = [replace(o, passed=o.shape_mismatch is None) for o in probe.outputs]
        copies.append(ProbeResult(probe.name, all(o.passed for o in outs), outs))
    return copies


def _agreement_notes(precision: str, agreement: dict[str, dict[str, Any]],
                     element_wise: bool) -> list[str]:  # fmt: skip
    notes = []
    if not element_wise:
        notes.append(
            f"{precision}: judged by task-level agreement only (quantization moves each value by "
            "up to a quantization step); pass atol/rtol to also judge values element-wise."
        )
    for name, result in agreement.items():
        if result["passed"] or result["metric"] == "shape":
            continue
        metric = "top-1 agreement" if result["metric"] == "top1" else "cosine similarity"
        notes.append(
            f"output {name!r}: {metric} {result['value']:.4g} is below the {precision} threshold "
            f"{result['threshold']:g}: the {precision} variant changes what the model predicts. "
            "Try a higher precision, or calibration=True for int8."
        )
    return notes


def cast_weights_parity(model: torch.nn.Module, reloaded: dict[str, torch.Tensor],
                        precision: str) -> ParityReport:  # fmt: skip
    """A cast weights artifact: every tensor bitwise equal to the live one cast to ``precision``
    (integer and bool tensors: to the live one), and each cast value within half a unit in the
    last place of its fp32 value, so a value beyond the half type's range fails."""
    import torch

    from .formats.safetensors_format import cast_state_dict
    from .frameworks.torch import device_of, to_numpy
    from .parity import OutputDiff, ParityReport, ProbeResult, compare_output

    atol, rtol = CAST_TOLERANCES[precision]
    live = model.state_dict()
    cast = cast_state_dict(live, precision)
    inf = math.inf
    diffs = []
    for name, tensor in live.items():
        expected, got = cast[name], reloaded.get(name)
        if got is None:
            diffs.append(OutputDiff(name, list(tensor.shape), inf, inf, 1.0, 0.0, inf,
                                    shape_mismatch="missing from the artifact", passed=False))  # fmt: skip
            continue
        exact = (got.dtype == expected.dtype and got.shape == expected.shape
                 and torch.equal(got.cpu(), expected.detach().cpu()))  # fmt: skip
        if exact and tensor.is_floating_point():
            diff = compare_output(name, to_numpy(tensor), to_numpy(got.float()), atol, rtol)
        else:
            note = None if exact else f"not the {precision} cast of the live tensor ({got.dtype})"
            diff = OutputDiff(name, list(tensor.shape), 0.0 if exact else inf, 0.0 if exact else inf,
                              0.0 if exact else 1.0, 1.0 if exact else 0.0, 0.0,
                              shape_mismatch=note, passed=exact)  # fmt: skip
        diffs.append(diff)
    extra = sorted(set(reloaded) - set(live))
    passed = all(d.passed for d in diffs) and not extra
    notes = [f"The artifact holds tensors the model does not: {', '.join(extra)}."] if extra else []
    notes += [f"{d.name}: {d.shape_mismatch}." if d.shape_mismatch else
              f"{d.name}: a value does not fit {precision} (max error {d.max_abs:.3g} against "
              "fp32): it overflowed or lost its precision; keep fp32 or use bf16."
              for d in diffs if not d.passed]  # fmt: skip
    return ParityReport(passed, atol, rtol, [ProbeResult("round trip", passed, diffs)],
                        device_of(model), False, notes, kind="weights", precision=precision)  # fmt: skip
