"""Example inputs: normalising what the user passes, naming inputs, and making parity probes."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import InvalidOptionError, MissingInputError

EXAMPLE_INPUTS_HELP = (
    "Pass example_inputs=: a tensor, a tuple of tensors, or a dict of keyword tensors, e.g. "
    "jms.stage(model, torch.randn(1, 3, 224, 224)). Or run the model once after jms.watch(model) "
    "(jms.find_models() watches every model it lists) and jms reuses the last call's inputs."
)


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape, dtype and device of one input or output tensor (no data)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    device: str

    @classmethod
    def of(cls, name: str, tensor: torch.Tensor) -> TensorSpec:
        dtype = str(tensor.dtype).removeprefix("torch.")
        return cls(name, tuple(tensor.shape), dtype, str(tensor.device))

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "shape": list(self.shape)}


@dataclass
class ExampleInputs:
    """Positional and keyword tensors for one forward call, with the names the exporters use."""

    args: tuple[torch.Tensor, ...]
    kwargs: dict[str, torch.Tensor] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    # how the framework packs the tensors into call arguments (Keras' ``Layout``); None: the
    # args and kwargs as they are (PyTorch)
    layout: Any = None

    @property
    def tensors(self) -> list[torch.Tensor]:
        return [*self.args, *self.kwargs.values()]

    @property
    def specs(self) -> list[TensorSpec]:
        return [TensorSpec.of(n, t) for n, t in zip(self.names, self.tensors)]

    def by_name(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.tensors))

    def replaced(self, tensors: list[torch.Tensor]) -> ExampleInputs:
        """The same call with other tensors, in ``names`` order."""
        n = len(self.args)
        return ExampleInputs(
            tuple(tensors[:n]), dict(zip(self.kwargs, tensors[n:])), self.names, self.layout
        )

    def to(self, device: torch.device) -> ExampleInputs:
        return self.replaced([t.to(device) for t in self.tensors])


def float_dtype(model: torch.nn.Module) -> str:
    """The dtype of the model's first floating weight ("float32" without one): its float inputs'."""
    for p in model.parameters():
        if p.is_floating_point():
            return str(p.dtype).removeprefix("torch.")
    return "float32"


def normalize_inputs(model: torch.nn.Module, example_inputs: Any) -> ExampleInputs:
    """Turn a tensor, tuple/list of tensors or dict of keyword tensors into ``ExampleInputs``."""
    if example_inputs is None:
        raise MissingInputError(
            f"No example inputs for {type(model).__name__}. {EXAMPLE_INPUTS_HELP}"
        )
    if isinstance(example_inputs, torch.Tensor):
        args, kwargs = (example_inputs,), {}
    elif isinstance(example_inputs, (tuple, list)):
        args, kwargs = tuple(example_inputs), {}
    elif isinstance(example_inputs, dict):
        args, kwargs = (), dict(example_inputs)
    else:
        raise InvalidOptionError(
            f"example_inputs is a {type(example_inputs).__name__}. {EXAMPLE_INPUTS_HELP}"
        )
    if not args and not kwargs:
        raise InvalidOptionError(f"example_inputs is empty. {EXAMPLE_INPUTS_HELP}")
    for key, value in [*enumerate(args), *kwargs.items()]:
        if not isinstance(value, torch.Tensor):
            raise InvalidOptionError(
                f"example input {key!r} is a {type(value).__name__}, not a tensor. "
                "Only tensors can be exported as model inputs; bind other arguments with "
                "functools.partial or a small wrapper module."
            )
    if any(not isinstance(k, str) or not k.isidentifier() for k in kwargs):
        raise InvalidOptionError("keyword example inputs need identifier keys, e.g. {'x': x}.")
    for key, value in [*enumerate(args), *kwargs.items()]:
        _check_dense(key, value)
    return ExampleInputs(args, kwargs, input_names_for(model, len(args), list(kwargs)))


def _check_dense(key: int | str, tensor: torch.Tensor) -> None:
    """Refuse tensors that exporters and parity probes cannot read: no data, or not dense."""
    if tensor.is_meta:
        raise InvalidOptionError(
            f"example input {key!r} is on the meta device and holds no data; create it on the "
            "model's device (e.g. torch.randn(..., device='cpu'))."
        )
    if tensor.is_nested or tensor.layout != torch.strided:
        kind = "nested" if tensor.is_nested else str(tensor.layout).removeprefix("torch.")
        raise InvalidOptionError(
            f"example input {key!r} is a {kind} tensor; exporters need dense tensors: pass "
            "x.to_dense() (or, for a nested tensor, a padded one)."
        )


def input_names_for(model: torch.nn.Module, n_args: int, kwarg_names: list[str]) -> list[str]:
    """Input names as the dynamo exporter chooses them: ``forward``'s parameter names."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    names: list[str] = []
    for p in params:
        if len(names) == n_args:
            break
        if p.kind == p.VAR_POSITIONAL:
            names += [f"{p.name}_{i}" for i in range(n_args - len(names))]
        elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
    names += [f"input_{i}" for i in range(len(names), n_args)]
    return names + kwarg_names


def make_probes(
    example: ExampleInputs, dynamic_dims: dict[str, list[tuple[int, int]]], seed: int = 0
) -> dict[str, ExampleInputs]:
    """Inputs to compare the live model and the artifact on.

    ``dynamic_dims`` maps an axis name to the (input index, dim) pairs that carry it. Probes:
    the example itself; standard-normal and example-matched random tensors of the same shapes
    (integers drawn from the observed value range, booleans at random); the example negated,
    shifted and scaled (``derived_from_example``), so that a Python ``if`` on tensor values
    takes its other side whichever side the example took; and per dynamic axis name, a matched
    random probe with another size on that axis (size - 1, or 2 when size is 1).
    """
    gen = torch.Generator().manual_seed(seed)
    shapes = [tuple(t.shape) for t in example.tensors]

    def drawn(sizes: list[Any], matched: bool = True) -> ExampleInputs:
        pairs = zip(example.tensors, sizes)
        return example.replaced([_random_like(t, tuple(s), gen, matched=matched) for t, s in pairs])

    probes = {
        "example": example,
        "random normal": drawn(shapes, matched=False),
        "random matched": drawn(shapes),
        **derived_from_example(example),
    }
    for axis, places in dynamic_dims.items():
        resized = [list(s) for s in shapes]
        for index, dim in places:
            size = resized[index][dim]
            resized[index][dim] = size - 1 if size > 1 else 2
        probes[f"{axis}={resized[places[0][0]][places[0][1]]}"] = drawn(resized)
    return probes


DERIVED_PROBES = ("negated example", "shifted example", "scaled example")


def derived_from_example(example: ExampleInputs) -> dict[str, ExampleInputs]:
    """The example moved across value thresholds, with its values' structure kept.

    Floating tensors: ``-x`` (a sign test flips), ``x + 2 * max|x|`` (every value above the
    example's largest) and ``x / 10`` (a norm test flips). Integer tensors (token ids, indices)
    stay valid: in the observed range ``[lo, hi]`` they are mirrored (``lo + hi - x``), rotated
    by half the range, and kept for "scaled". Boolean tensors (masks) are kept: a flipped mask is
    rarely a valid input. A probe equal to the example (nothing to move) is left out.
    """
    probes = {}
    for name in DERIVED_PROBES:
        tensors = [_derived(t, name) for t in example.tensors]
        if any(d is not t for d, t in zip(tensors, example.tensors)):
            probes[name] = example.replaced(tensors)
    return probes


def _derived(t: torch.Tensor, kind: str) -> torch.Tensor:
    if t.dtype == torch.bool or t.numel() == 0:
        return t
    if not (t.is_floating_point() or t.is_complex()):
        low, high = int(t.min()), int(t.max())
        if low == high or kind == "scaled example":
            return t
        wide = t.long()  # no overflow in int8/uint8 arithmetic
        if kind == "negated example":
            return ((low + high) - wide).to(t.dtype)
        span = high - low + 1
        return ((wide - low + span // 2) % span + low).to(t.dtype)
    x = t.detach()
    if kind == "negated example":
        return -x
    if kind == "shifted example":
        spread = float(x.abs().max()) if x.isfinite().all() else 1.0
        return x + 2 * (spread or 1.0)
    return x / 10


def _random_like(
    t: torch.Tensor, shape: tuple[int, ...], gen: torch.Generator, *, matched: bool
) -> torch.Tensor:
    if t.dtype == torch.bool:
        out = torch.randint(0, 2, shape, generator=gen).bool()
    elif not (t.is_floating_point() or t.is_complex()):
        low, high = (int(t.min()), int(t.max())) if t.numel() else (0, 1)
        out = torch.randint(low, high + 1, shape, generator=gen, dtype=torch.int64)
    else:
        out = torch.randn(shape, generator=gen, dtype=torch.float64)
        if matched and t.numel() > 1:
            ref = t.detach().double()
            out = out * ref.std().cpu() + ref.mean().cpu()
    return out.to(dtype=t.dtype, device=t.device)
