"""The Comm protocol between the JupyterLab sidebar and the kernel side, defined once.

The sidebar opens a Comm on ``COMM_TARGET``; the kernel side (``kernel.py``) answers with a
``ReadyEvent``. Each ``Request`` names an operation (``Op``) and carries its arguments; while the
kernel works it sends ``ProgressEvent``s, then exactly one ``ReplyEvent`` whose ``result`` is the
operation's reply type (``OPERATIONS``: op -> (arguments, reply)). ``src/protocol.ts`` mirrors
every type here under the same name with an ``I`` in front (``StageArgs`` -> ``IStageArgs``);
``tests/test_protocol.py::test_the_typescript_protocol_mirrors_the_python_one``
fails when the two drift. ``FIELDS``, the JSON type of every request field that the kernel side
checks, is read from the argument types.

(No ``from __future__ import annotations`` here: the field types are read at run time.)
"""

import sys
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    from typing import NotRequired, TypedDict
else:  # pragma: no cover - Python 3.10
    from typing_extensions import NotRequired, TypedDict

COMM_TARGET = "jupyter_modelsave"

Op = Literal["models", "options", "stage", "diff", "write", "discard"]
# input name -> {dim: axis name} (dims as JSON object keys: "0", "-1") or [dim, ...]
DynamicAxesArg = dict[str, dict[str, str] | list[int]]


class TensorSpec(TypedDict):
    name: str
    shape: list[int]
    dtype: str
    device: str


class AxisRow(TypedDict):
    """One dimension the dynamic-axes editors offer, with the axis name it starts from."""

    input: str
    dim: int
    size: int
    name: str


class ModelInfo(TypedDict):
    """``jms.ModelInfo.to_dict()``, plus the rows of the dynamic-axes editor."""

    name: str
    class_name: str
    num_params: int
    size_bytes: int
    device: str
    dtype: str
    training: bool
    last_input: list[TensorSpec] | None  # PyTorch: the last call; Keras: declared inputs
    framework: str
    formats: list[str]
    sharding: str | None
    guessed_input: TensorSpec | None
    guessed_expression: str | None
    can_generate: bool  # generation=True applies (a transformers language model)
    variants: bool  # precision variants can be staged from it (the format's ``precisions``)
    axes: list[AxisRow]


class FormatInfo(TypedDict):
    """A format's ``Capabilities`` (``core/formats/base.py``) as the surfaces read them."""

    extension: str
    description: str
    kind: Literal["graph", "weights"]
    needs_inputs: bool
    dynamic_axes: bool
    exporters: list[str]
    opsets: dict[str, list[int]]  # exporter -> [lowest, highest]
    folder: bool
    graph_view: bool
    precisions: list[str]  # what ``stage(precision=)`` makes here (``jms.precisions``)
    generation: bool  # holds ``generation=True`` exports


class FrameworkInfo(TypedDict):
    label: str
    example_hint: str
    records_calls: bool
    formats: dict[str, FormatInfo]


class OutputDiff(TypedDict):
    name: str
    shape: list[int]
    max_abs: float | str  # non-finite numbers as strings ("inf")
    max_rel: float | str
    mismatch_fraction: float
    cosine: float | str
    min_atol: float | str
    top1_agreement: float | None
    shape_mismatch: str | None
    passed: bool
    peak: float | str | None
    scaled_atol: float | str | None


class Probe(TypedDict):
    name: str
    passed: bool
    outputs: list[OutputDiff]


class LayerDiff(TypedDict):
    """One compared module call (``parity.LayerDiff``): where the artifact starts to differ."""

    module: str  # qualified name in the live model; "" for the model itself
    class_name: str
    call: int  # which call of the module (0: the first)
    shape: list[int]
    max_abs: float | str
    max_rel: float | str
    cosine: float | str
    mismatch_fraction: float
    passed: bool
    source: str | None  # file:line of the module's forward code, when known
    code: str | None
    nodes: list[str]  # the ONNX nodes that compute it (empty for other formats)


class OutputAgreement(TypedDict):
    """A precision variant's task-level agreement on one output (``core/precision.py``)."""

    metric: Literal["top1", "cosine", "shape"]
    value: float | str | None
    threshold: float | None
    passed: bool
    rows: NotRequired[int]  # top1: the rows pooled over every probe


class Agreement(TypedDict):
    element_wise: bool  # whether values were judged element-wise too
    outputs: dict[str, OutputAgreement]


class GreedyRun(TypedDict):
    """A generation export's greedy loop against the live model's ``generate()``."""

    name: str
    prompt_lengths: list[int]
    live_tokens: list[list[int]]
    artifact_tokens: list[list[int]]
    steps_compared: int
    passed: bool
    first_difference: int | None
    near_tie: bool


class Report(TypedDict):
    """``ParityReport.to_dict()`` (a generation export's: ``GenerationReport``'s)."""

    passed: bool
    atol: float
    rtol: float
    probes: list[Probe]
    reference_device: str
    tf32: bool
    diagnosis: list[str]
    kind: Literal["outputs", "weights"]
    value_conversions: list[str]
    first_divergence: LayerDiff | None  # localization (``core/localize``)
    layers: list[LayerDiff]
    localization: str | None
    precision: str  # the precision judged: "fp32", "fp16", "bf16", "int8" (or the model's own)
    agreement: Agreement | None  # a variant's
    outputs: list[OutputDiff]
    steps: NotRequired[int]  # generation exports: greedy steps, and the runs
    generation: NotRequired[list[GreedyRun]]


# how a precision variant was made (``StagedExport.variant``; "from" is a Python keyword)
Variant = TypedDict(
    "Variant",
    {"precision": str, "from": str, "method": str, "fp32_size_bytes": int | None,
     "size_ratio": float | None},
)  # fmt: skip


class Latency(TypedDict):
    """``StagedExport.latency`` (``core/latency.py``)."""

    p50_ms: float
    p95_ms: float
    eager_p50_ms: float
    eager_p95_ms: float
    device: str
    runtime: str
    batch: int | None
    runs: int
    eager_runs: int


class ModelsArgs(TypedDict):
    pass


class ModelsReply(TypedDict):
    models: list[ModelInfo]


class OptionsArgs(TypedDict):
    pass


class OptionsReply(TypedDict):
    version: str
    frameworks: dict[str, FrameworkInfo]
    tolerances: dict[str, list[float]]  # float dtype -> [atol, rtol]


class StageArgs(TypedDict):
    model: str
    format: NotRequired[str | None]
    exporter: NotRequired[str | None]
    opset: NotRequired[int | None]
    atol: NotRequired[float | None]
    rtol: NotRequired[float | None]
    name: NotRequired[str | None]
    example: NotRequired[str | None]  # a Python expression; null: the last recorded call
    dynamic_axes: NotRequired[DynamicAxesArg | None]
    generation: NotRequired[bool]  # ONNX with past key values, checked on a greedy loop
    precision: NotRequired[str | None]  # "fp32", "fp16", "bf16", "int8"; null: the model's own
    latency: NotRequired[bool]  # measure a graph artifact's latency (default true)


class StagedReply(TypedDict):
    id: str
    name: str
    format: str
    exporter: str
    opset: int | None
    size_bytes: int
    sha256: str
    warnings: list[str]
    report: Report | None
    precision: str
    variant: Variant | None
    latency: Latency | None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    file: str  # file names in the staging folder
    graph: str | None
    folder_artifact: bool


class DiffArgs(TypedDict):
    id: str
    folder: NotRequired[str | None]  # relative to the server's root; null: the root


class SignatureChange(TypedDict):
    before: Any
    after: Any


class Diff(TypedDict):
    """``StagedExport.diff(folder)``: against the newest artifact of the same name there."""

    previous_version: str
    previous_path: str  # relative to the server's root
    previous_sha256: str
    size_ratio: float | None
    signature_changed: dict[str, SignatureChange]
    max_abs: float | str | None
    cosine: float | str | None
    compared: Literal["outputs", "weights"] | None
    worst: NotRequired[str]  # where the least cosine was seen
    notes: list[str]
    warnings: list[str]


class DiffReply(TypedDict):
    diff: Diff | None


class WriteArgs(TypedDict):
    id: str
    folder: NotRequired[str | None]
    name: NotRequired[str | None]
    version: NotRequired[str | None]
    overwrite: NotRequired[bool]
    allow_mismatch: NotRequired[bool]


class WrittenReply(TypedDict):
    path: str  # relative to the server's root
    manifest: str


class DiscardArgs(TypedDict):
    id: str


class DiscardedReply(TypedDict):
    discarded: bool


class Request(TypedDict):
    id: str | int
    op: Op
    args: dict[str, Any]


class ErrorInfo(TypedDict):
    type: str  # the Python class name, or "Cancelled"
    message: str


class ReadyEvent(TypedDict):
    event: Literal["ready"]
    version: str


class ProgressEvent(TypedDict):
    id: str | int | None
    event: Literal["progress"]
    step: str
    fraction: float


class ReplyEvent(TypedDict):
    id: str | int | None
    event: Literal["reply"]
    ok: bool
    result: NotRequired[Any]  # when ok
    error: NotRequired[ErrorInfo]  # when not ok


OPERATIONS: dict[str, tuple[type, type]] = {
    "models": (ModelsArgs, ModelsReply),
    "options": (OptionsArgs, OptionsReply),
    "stage": (StageArgs, StagedReply),
    "diff": (DiffArgs, DiffReply),
    "write": (WriteArgs, WrittenReply),
    "discard": (DiscardArgs, DiscardedReply),
}
_JSON = {str: "string", int: "integer", float: "number", bool: "boolean"}


def field_kind(annotation: Any) -> str:
    """The JSON type a request field takes: ``string``, ``integer``, ``number``, ``boolean`` or
    ``dynamic axes``, with ``?`` when null is accepted (and means "left out")."""
    union = get_origin(annotation) in (Union, types.UnionType)
    options = get_args(annotation) if union else (annotation,)
    kinds = [o for o in options if o is not type(None)]
    kind = "dynamic axes" if kinds == [DynamicAxesArg] else _JSON[kinds[0]]
    return kind + ("?" if len(kinds) < len(options) else "")


# op -> field -> JSON type, as kernel.check_fields applies it
FIELDS: dict[str, dict[str, str]] = {
    op: {name: field_kind(t) for name, t in get_type_hints(args).items()}
    for op, (args, _) in OPERATIONS.items()
}
# fields that may be left out but are never null (the flags)
OPTIONAL_NOT_NULL = {
    name
    for op, (args, _) in OPERATIONS.items()
    for name in args.__optional_keys__
    if not FIELDS[op][name].endswith("?")
}
