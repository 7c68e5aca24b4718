"""A Keras/TensorFlow export job: the model, its example inputs and how to call it.

The example is what you pass to ``model(...)``: one array, a list/tuple of arrays (a Keras model's
several inputs) or a dict of arrays. For a plain ``tf.Module`` a tuple is spread as positional
arguments. Inputs are kept as CPU torch tensors in an ``ExampleInputs`` so that the parity probes
are the very ones PyTorch models get (``inputs.make_probes``); they become numpy arrays on the way
into the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidOptionError, MissingInputError
from ..inputs import ExampleInputs

EXAMPLE_HELP = (
    "Pass example_inputs= as you would call the model: a numpy array (or tf tensor), a list of "
    "arrays for several inputs, or a dict of arrays, e.g. jms.stage(model, np.zeros((1, 28, 28, 1), "
    "'float32')). Models built with keras.Input get random inputs of their declared shapes."
)
DEFAULT_BATCH = 2  # a declared None dimension in a synthesised example


@dataclass(frozen=True)
class Layout:
    """How a flat list of arrays becomes the model's call arguments."""

    kind: str  # "single", "list", "tuple" or "dict"
    keys: tuple[str, ...] = ()
    spread: bool = False  # tf.Module: a tuple is positional arguments

    def pack(self, arrays: list[Any]) -> tuple[Any, ...]:
        if self.kind == "single":
            return (arrays[0],)
        if self.kind == "dict":
            return (dict(zip(self.keys, arrays)),)
        items = list(arrays) if self.kind == "list" else tuple(arrays)
        return tuple(items) if self.spread else (items,)


@dataclass
class KerasJob:
    """Everything a Keras/TF format needs; attribute names match ``formats.base.ExportJob``."""

    model: Any
    framework: str  # "keras" or "tensorflow"
    example: ExampleInputs  # CPU torch tensors, all positional, names = input_names
    layout: Layout
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    opset: int | None
    metadata: dict[str, Any]
    workdir: Path
    exporter: str = "keras"
    format_options: dict[str, Any] = field(default_factory=dict)
    # (atol, rtol) of outputs judged other than the report's tolerances (by their own dtype)
    output_tolerances: dict[str, tuple[float, float]] = field(default_factory=dict)

    def call(self, probe: ExampleInputs) -> Any:
        """The live model's raw output on a probe (inference mode)."""
        args = self.layout.pack([t.numpy() for t in probe.tensors])
        if self.framework == "keras":
            return self.model(*args, training=False)
        return self.model(*args)

    def signature(self) -> list[Any]:
        """``tf.TensorSpec``s of the call arguments: the example's shapes, None on dynamic axes."""
        from . import _tf

        tf = _tf.tensorflow("Exporting a graph")
        specs = []
        for name, tensor in zip(self.input_names, self.example.tensors):
            dynamic = self.dynamic_axes.get(name, {})
            shape = [None if d in dynamic else s for d, s in enumerate(tensor.shape)]
            dtype = str(tensor.dtype).removeprefix("torch.")
            specs.append(tf.TensorSpec(shape, tf.as_dtype(dtype), name=name))
        return list(self.layout.pack(specs))


def normalize_example(
    model: Any, framework: str, example_inputs: Any
) -> tuple[ExampleInputs, Layout, bool]:
    """(inputs, layout, synthesised?) from what the user gave, or from declared input shapes."""
    synthesised = example_inputs is None
    if synthesised:
        example_inputs = declared_example(model)
        if example_inputs is None:
            raise MissingInputError(f"No example inputs for {type(model).__name__}. {EXAMPLE_HELP}")
    declared = declared_input_names(model)
    if isinstance(example_inputs, dict):
        if not example_inputs or not all(
            isinstance(k, str) and k.isidentifier() for k in example_inputs
        ):
            raise InvalidOptionError(f"example_inputs needs identifier keys. {EXAMPLE_HELP}")
        keys = tuple(example_inputs)
        layout, values, names = Layout("dict", keys), list(example_inputs.values()), list(keys)
    elif isinstance(example_inputs, (list, tuple)):
        if not example_inputs:
            raise InvalidOptionError(f"example_inputs is empty. {EXAMPLE_HELP}")
        kind = "list" if isinstance(example_inputs, list) else "tuple"
        layout = Layout(kind, spread=framework == "tensorflow" and kind == "tuple")
        values = list(example_inputs)
        names = declared if len(declared) == len(values) else []
        names = names or [f"input_{i}" for i in range(len(values))]
    else:
        layout, values = Layout("single"), [example_inputs]
        names = declared[:1] if len(declared) == 1 else ["input"]
    arrays = [_array(i, v) for i, v in enumerate(values)]
    import torch

    tensors = tuple(torch.from_numpy(np.array(a, copy=True, order="C")) for a in arrays)  # a copy
    return ExampleInputs(tensors, {}, names), layout, synthesised


def _array(index: int, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (Keras on the torch backend)
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except Exception as err:
        raise InvalidOptionError(
            f"example input {index} ({type(value).__name__}) is not an array: {err}. {EXAMPLE_HELP}"
        ) from None
    if array.dtype.kind not in "biuf" or array.dtype.itemsize > 8:
        raise InvalidOptionError(
            f"example input {index} has dtype {array.dtype}; only numeric arrays can be model "
            f"inputs. {EXAMPLE_HELP}"
        )
    return array


def declared_input_names(model: Any) -> list[str]:
    """The names of a functional/Sequential model's ``keras.Input``s (else none)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return []
    names = [getattr(i, "name", None) for i in inputs or []]
    return [n for n in names if n] if all(n and n.isidentifier() for n in names) else []


def declared_none_dims(model: Any) -> list[list[int]]:
    """Per declared input of a functional/Sequential model, the dims declared as None."""
    try:
        inputs = list(model.inputs or [])
    except (AttributeError, ValueError):
        return []
    return [[d for d, size in enumerate(t.shape) if size is None] for t in inputs]


def declared_example(model: Any) -> Any:
    """Random normal inputs of a functional/Sequential model's declared shapes (None -> 2)."""
    try:
        inputs = list(model.inputs or [])
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    rng = np.random.default_rng(0)
    arrays = []
    for tensor in inputs:
        shape = [DEFAULT_BATCH if s is None else int(s) for s in tensor.shape]
        dtype = np.dtype(str(getattr(tensor, "dtype", "float32")))
        arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays[0] if len(arrays) == 1 else arrays


def flatten_outputs(output: Any) -> tuple[list[str], list[np.ndarray]]:
    """Names as for PyTorch: ``output``, ``output_<i>`` for a sequence, a dict's (sorted) keys."""
    leaves = list(_leaves(output, ()))
    if not leaves:
        raise InvalidOptionError(
            f"The model returned no tensors ({type(output).__name__}); nothing to export."
        )
    if len(leaves) == 1 and not leaves[0][0]:
        return ["output"], [to_numpy(leaves[0][1])]
    top_dict = isinstance(output, dict)
    names = ["_".join(p) if top_dict else "output_" + "_".join(p) for p, _ in leaves]
    return names, [to_numpy(a) for _, a in leaves]


def output_dtypes(output: Any) -> list[str]:
    """The dtype of each output as the model computed it (bfloat16 stays bfloat16), in
    ``flatten_outputs``' order."""
    return [str(getattr(v.dtype, "name", v.dtype)) for _, v in _leaves(output, ())]


def _leaves(value: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict):  # sorted, as tf.nest flattens (and so orders graph outputs)
        for key in sorted(value):
            yield from _leaves(value[key], (*path, str(key)))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, str(i)))
    elif value is not None:
        yield path, value


def to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    array = np.asarray(value)
    return array.astype(np.float32) if array.dtype.name == "bfloat16" else array
