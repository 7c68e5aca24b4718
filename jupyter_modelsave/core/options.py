"""Validation of the user's export options. Every refusal says which value is wrong and why."""

from __future__ import annotations

import math
import numbers
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import InvalidOptionError, shown

if TYPE_CHECKING:
    from .inputs import ExampleInputs

# (atol, rtol) by the reference model's floating dtype. float16/bfloat16 carry ~3 and ~2
# significant digits, so their defaults are looser; float64 is held tighter.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-6, 1e-5),
    "float32": (1e-4, 1e-3),
    "float16": (1e-2, 1e-2),
    "bfloat16": (5e-2, 5e-2),
}
EXPORTERS = ("auto", "dynamo", "torchscript")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")

DynamicAxes = dict[str, dict[int, str]]
MAX_DIM = 1 << 16  # far beyond any rank; bounds the dims of outputs, whose rank is unknown


def default_tolerances(dtype: str) -> tuple[float, float]:
    return DEFAULT_TOLERANCES.get(dtype, DEFAULT_TOLERANCES["float32"])


def check_tolerance(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy scalars too
        raise InvalidOptionError(f"{name} must be a number such as 1e-4, got {shown(value)}.")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        number = math.inf
    if not math.isfinite(number) or number < 0:
        raise InvalidOptionError(f"{name} must be a finite number >= 0, got {shown(value)}.")
    return number


def check_flag(name: str, value: Any) -> bool:
    """``True`` or ``False`` only: a truthy string such as ``"False"`` must not switch a flag on."""
    if not isinstance(value, bool):
        raise InvalidOptionError(f"{name} must be True or False, got {shown(value)}.")
    return value


def check_optional_flag(name: str, value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise InvalidOptionError(f"{name} must be True, False or None, got {shown(value)}.")
    return value


def check_exporter(exporter: Any) -> str:
    if exporter not in EXPORTERS:
        raise InvalidOptionError(
            f"exporter={shown(exporter)} is not one of {', '.join(EXPORTERS)}."
        )
    return exporter


def check_names(kind: str, names: Any, expected: int) -> list[str] | None:
    """``input_names`` / ``output_names``: None, or one distinct identifier-like string per tensor."""
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise InvalidOptionError(f"{kind} must be a list of strings, got {shown(names)}.")
    names = list(names)
    if len(names) != expected:
        raise InvalidOptionError(f"{kind} has {len(names)} names but the model has {expected}.")
    for n in names:
        if not isinstance(n, str) or not _SAFE_NAME.match(n):
            raise InvalidOptionError(
                f"{kind}: {shown(n)} is not a usable tensor name; use letters, digits, '_', '.', '-'."
            )
    if len(set(names)) != len(names):
        raise InvalidOptionError(f"{kind} has duplicates: {names}.")
    return names


def check_artifact_name(name: Any) -> str:
    """A file-name stem: no separators, no leading dot, at most 128 characters."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise InvalidOptionError(
            f"name {shown(name)} cannot be used in a file name: use 1-128 letters, digits, "
            "'_', '.', '+' or '-', starting with a letter or digit."
        )
    return name


def artifact_name_from(identifier: str) -> str:
    """The default artifact name made from a variable or class name, always usable in a file
    name: accents dropped (``modèle`` -> ``modele``), other characters outside
    ``[A-Za-z0-9_.+-]`` -> ``_``, leading ``_``/``.``/``+``/``-`` removed, at most 128
    characters; ``model`` when nothing is left (``名前``)."""
    ascii_only = unicodedata.normalize("NFKD", identifier).encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", ascii_only).lstrip("_.+-")[:128]
    return name or "model"


def check_destination(dest: Any) -> str | os.PathLike:
    """A folder or file path: a ``str`` or ``os.PathLike`` without NUL bytes."""
    if not isinstance(dest, (str, os.PathLike)) or not str(dest).strip():
        raise InvalidOptionError(
            f"dest must be a folder (ending in '/') or a file path, got {shown(dest)}."
        )
    if "\0" in str(dest):
        raise InvalidOptionError("The destination path contains a NUL byte.")
    try:
        os.fsencode(str(dest))
    except UnicodeEncodeError:
        raise InvalidOptionError(
            f"The destination path {shown(dest)} is not valid text (a lone surrogate)."
        ) from None
    return dest


def check_metadata(metadata: Any) -> dict[str, Any]:
    import json

    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise InvalidOptionError("metadata must be a dict with string keys.")
    try:
        json.dumps(dict(metadata))
    except (TypeError, ValueError) as err:
        raise InvalidOptionError(f"metadata must be JSON-serialisable: {err}.") from None
    return dict(metadata)


def check_dynamic_axes(
    dynamic_axes: Any, example: ExampleInputs, output_names: list[str]
) -> DynamicAxes:
    """Accept ``{"input": {0: "batch"}}`` or ``{"input": [0]}``; return ``{name: {dim: axis}}``.

    Names may be input or output names. Dims may be negative. An axis name must be a Python
    identifier; the list form names axes ``<tensor>_dim<d>`` (``d`` counted from 0 for inputs).
    """
    if dynamic_axes is None:
        return {}
    if not isinstance(dynamic_axes, Mapping):
        raise InvalidOptionError(
            f"dynamic_axes must be a dict like {{'input': {{0: 'batch'}}}}, got {shown(dynamic_axes)}."
        )
    ranks = {s.name: len(s.shape) for s in example.specs}
    known = [*ranks, *output_names]
    result: DynamicAxes = {}
    for tensor, axes in dynamic_axes.items():
        if not isinstance(tensor, str) or tensor not in known:
            raise InvalidOptionError(
                f"dynamic_axes names {shown(tensor)}, which is not an input or output; "
                f"known names: {', '.join(known)}."
            )
        if isinstance(axes, Sequence) and not isinstance(axes, str):
            axes = _listed_dims(tensor, axes)
        if not isinstance(axes, Mapping):
            raise InvalidOptionError(
                f"dynamic_axes[{shown(tensor)}] must map dims to names, got {shown(axes)}."
            )
        rank = ranks.get(tensor)
        result[tensor] = {}
        for dim, axis in axes.items():
            if isinstance(dim, bool) or not isinstance(dim, int):
                raise InvalidOptionError(
                    f"dynamic_axes[{shown(tensor)}]: dim {shown(dim)} is not an integer."
                )
            if rank is not None and not -rank <= dim < rank:
                raise InvalidOptionError(
                    f"dynamic_axes[{shown(tensor)}]: dim {shown(dim)} is out of range for a "
                    f"{rank}-d input."
                )
            if abs(dim) > MAX_DIM:
                raise InvalidOptionError(
                    f"dynamic_axes[{shown(tensor)}]: dim {shown(dim)} is out of range."
                )
            if axis is None:  # the list form
                axis = f"{tensor}_dim{dim % rank if rank else dim}"
            if not isinstance(axis, str) or not axis.isidentifier():
                raise InvalidOptionError(
                    f"dynamic_axes[{shown(tensor)}][{dim}]: axis name {shown(axis)} must be an identifier "
                    "such as 'batch' or 'seq_len'."
                )
            result[tensor][dim % rank if rank else dim] = axis
    return result


def _listed_dims(tensor: str, dims: Sequence[Any]) -> dict[int, None]:
    """The list form ``{"input": [0, 1]}``: each dim an integer; named once checked."""
    for dim in dims:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise InvalidOptionError(
                f"dynamic_axes[{shown(tensor)}]: dim {shown(dim)} is not an integer; list dims "
                "like [0, 1]."
            )
    return dict.fromkeys(dims)


def shared_dimensions(
    shapes: list[tuple[int, ...]], names: list[str], dynamic_axes: DynamicAxes
) -> str:
    """A hint naming the inputs whose unmarked dims have the size of another input's dynamic axis.

    Two inputs that share a dimension (``input_ids`` and ``attention_mask`` share batch and
    sequence) must both mark it; with one marked, the exporters fix it, or a probe that resizes
    the marked one gives the model mismatched inputs. Empty when no input has such a dim.
    """
    axis_of_size: dict[int, tuple[str, str]] = {}  # size -> (axis name, input that marks it)
    for name, shape in zip(names, shapes):
        for dim, axis in dynamic_axes.get(name, {}).items():
            if dim < len(shape):
                axis_of_size.setdefault(shape[dim], (axis, name))
    suggested: DynamicAxes = {}
    for name, shape in zip(names, shapes):
        marked = dynamic_axes.get(name, {})
        for dim, size in enumerate(shape):
            axis, owner = axis_of_size.get(size, (None, name))
            if dim not in marked and axis is not None and owner != name:
                suggested.setdefault(name, {})[dim] = axis
    if not suggested:
        return ""
    whole = {n: {**dynamic_axes.get(n, {}), **suggested.get(n, {})} for n in names
             if n in dynamic_axes or n in suggested}  # fmt: skip
    return (
        f"{', '.join(suggested)} {'has' if len(suggested) == 1 else 'have'} unmarked dimensions "
        "of the same size as a dynamic axis: inputs that share a dimension must all mark it "
        f"dynamic, e.g. dynamic_axes={whole!r}."
    )


def opset_range(exporter: str) -> tuple[int, int]:
    """The opsets the installed onnx and the chosen torch exporter both support."""
    import onnx
    from torch.onnx import _constants

    high = min(onnx.defs.onnx_opset_version(), _constants.ONNX_MAX_OPSET)
    if exporter == "torchscript":
        high = min(high, _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    return _constants.ONNX_MIN_OPSET, high


def check_opset(opset: Any, adapter: Any, exporter: str) -> int | None:
    """None, or an opset the framework's ONNX exporter builds (``Adapter.opsets``)."""
    if opset is None:
        return None
    low, high, what = adapter.opsets(exporter)
    if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= high:
        raise InvalidOptionError(
            f"opset={shown(opset)} is not supported here: the installed {what} support opsets "
            f"{low} to {high}. Leave opset=None for the default."
        )
    return opset


def default_axis_name(tensor: str, dim: int) -> str:
    """The name jms gives a dynamic axis nobody named: ``batch`` for dim 0, else
    ``<tensor>_dim<dim>`` (the surfaces' dynamic-axes editors start from it)."""
    return "batch" if dim == 0 else f"{tensor}_dim{dim}"
