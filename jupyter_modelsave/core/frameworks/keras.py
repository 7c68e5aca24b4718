"""Keras models and TensorFlow ``tf.Module``s under the one flow.

The example is what you pass to ``model(...)``: one array, a list/tuple of arrays (a Keras model's
several inputs) or a dict of arrays; for a plain ``tf.Module`` a tuple is spread as positional
arguments. Inputs are kept as CPU torch tensors in an ``ExampleInputs`` (with the ``Layout`` that
packs them back into call arguments), so that the parity probes are the very ones PyTorch models
get; they become numpy arrays on the way into the model. A model built with ``keras.Input`` gets
random inputs of its declared shapes when none are given. The reference runs with TensorFlow's
TF32 off. Nothing here imports TensorFlow or Keras until a model of theirs is at hand.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._capture import captured_output, strip_ansi
from ..errors import (
    InvalidOptionError,
    MissingDependencyError,
    MissingInputError,
    StateDictMismatchError,
)
from . import Adapter, Example

INSTALL_HINT = 'pip install "jupyter_modelsave[tensorflow]"'
DEFAULT_BATCH = 2  # a declared None dimension in a synthesised example
EXAMPLE_HELP = (
    "Pass example_inputs= as you would call the model: a numpy array (or tf tensor), a list of "
    "arrays for several inputs, or a dict of arrays, e.g. jms.stage(model, np.zeros((1, 28, 28, 1), "
    "'float32')). Models built with keras.Input get random inputs of their declared shapes."
)


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


def to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (Keras on the torch backend)
        value = value.detach().cpu()
    array = np.asarray(value)
    return array.astype(np.float32) if array.dtype.name == "bfloat16" else array


class KerasAdapter(Adapter):
    name = "keras"
    label = "Keras"
    noun = "Keras models"
    call_name = "call()"
    example_help = EXAMPLE_HELP
    example_hint = "np.zeros((1, 224, 224, 3), 'float32')"
    spreads_tuples = False  # a tuple example is one argument (a list of inputs), not several
    call_options: dict[str, Any] = {"training": False}  # of every call: inference

    def check_ready(self, model: Any, runs: bool) -> None:
        if not runs and not getattr(model, "built", True):
            raise InvalidOptionError(
                f"{type(model).__name__} is not built and has no weights yet: call it once on an "
                "example (model(x)) or build it, then save it."
            )

    def example(self, model: Any, example_inputs: Any, required: bool) -> Example | None:
        if example_inputs is None and not required:
            return None
        note, declared = "", None
        if example_inputs is None:
            example_inputs = declared_example(model)
            if example_inputs is None:
                raise MissingInputError(
                    f"No example inputs for {type(model).__name__}. {EXAMPLE_HELP}"
                )
            note = "example inputs: random normal arrays of the model's declared input shapes (None -> 2)"
            declared = declared_none_dims(model)
        return Example(self._inputs(model, example_inputs), note, declared)

    def _inputs(self, model: Any, example_inputs: Any) -> Any:
        import torch

        from ..inputs import ExampleInputs

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
            layout = Layout(kind, spread=self.spreads_tuples and kind == "tuple")
            values = list(example_inputs)
            names = declared if len(declared) == len(values) else []
            names = names or [f"input_{i}" for i in range(len(values))]
        else:
            layout, values = Layout("single"), [example_inputs]
            names = declared[:1] if len(declared) == 1 else ["input"]
        arrays = [_array(i, v) for i, v in enumerate(values)]
        tensors = tuple(torch.from_numpy(np.array(a, copy=True, order="C")) for a in arrays)
        return ExampleInputs(tensors, {}, names, layout)

    def call(self, model: Any, inputs: Any) -> Any:
        return model(*inputs.layout.pack([t.numpy() for t in inputs.tensors]), **self.call_options)

    def flatten(self, output: Any) -> tuple[list[str], list[Any]]:
        """Names as for PyTorch: ``output``, ``output_<i>`` for a sequence, a dict's (sorted) keys."""
        leaves = list(_leaves(output, ()))
        if len(leaves) == 1 and not leaves[0][0]:
            return ["output"], [leaves[0][1]]
        top_dict = isinstance(output, dict)
        names = ["_".join(p) if top_dict else "output_" + "_".join(p) for p, _ in leaves]
        return names, [v for _, v in leaves]

    to_numpy = staticmethod(to_numpy)

    def spec(self, name: str, value: Any) -> Any:
        from ..inputs import TensorSpec

        device = device_name(str(getattr(value, "device", "") or "cpu"))
        return TensorSpec(name, tuple(value.shape), _dtype_name(value.dtype), device)

    def reference_dtypes(self, model: Any, values: list[Any]) -> list[str]:
        """Each output by its own dtype as computed: a mixed-precision model's float16 and
        bfloat16 outputs get their dtype's tolerances."""
        return [_dtype_name(v.dtype) for v in values]

    def device_of(self, model: Any) -> str:
        """Where the first weight lives: ``cpu``, ``gpu:0``, ... (``cpu`` if none)."""
        for variable in _variables(model):
            value = getattr(variable, "value", variable)
            return device_name(str(getattr(value, "device", "") or "cpu"))
        return "cpu"

    def float_dtype(self, model: Any) -> str:
        for variable in _variables(model):
            dtype = _dtype_name(variable.dtype)
            if dtype.startswith(("float", "bfloat")):
                return dtype
        return "float32"

    def live_weights(self, model: Any) -> dict[str, np.ndarray]:
        """A copy of every weight by its path (made unique), in the model's order."""
        weights: dict[str, np.ndarray] = {}
        for variable in _variables(model):
            name = base = str(getattr(variable, "path", None) or variable.name)
            while name in weights:
                name = f"{base} ({len(weights)})"
            weights[name] = np.array(to_numpy(variable), copy=True)
        return weights

    def bitwise_equal(self, live: Any, reloaded: Any) -> bool:
        return live.tobytes() == reloaded.tobytes()

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """TensorFloat-32 off in TensorFlow (on by default on Ampere GPUs) for the block."""
        tf = sys.modules.get("tensorflow")
        config = getattr(getattr(tf, "config", None), "experimental", None)
        if config is None or not hasattr(config, "tensor_float_32_execution_enabled"):
            yield
            return
        before = config.tensor_float_32_execution_enabled()
        config.enable_tensor_float_32_execution(False)
        try:
            yield
        finally:
            config.enable_tensor_float_32_execution(before)

    def opsets(self, exporter: str) -> tuple[int, int, str]:
        import onnx

        tf2onnx = require("tf2onnx.constants", "Exporting a Keras/TensorFlow model to ONNX")
        low = min(tf2onnx.OPSET_TO_IR_VERSION)
        high = min(max(tf2onnx.OPSET_TO_IR_VERSION), onnx.defs.onnx_opset_version())
        return low, high, "tf2onnx and onnx"

    def versions(self) -> dict[str, str]:
        found = {
            m: getattr(sys.modules.get(m), "__version__", None) for m in ("keras", "tensorflow")
        }
        return {m: str(v) for m, v in found.items() if v}

    def submodels(self, model: Any) -> list[Any]:
        found: list[Any] = []
        stack = list(getattr(model, "layers", []))
        while stack:
            layer = stack.pop()
            found.append(layer)
            stack += list(getattr(layer, "layers", []))
        torch = sys.modules.get("torch")  # Keras on the torch backend: layers hold nn.Modules too
        if torch is not None and isinstance(model, torch.nn.Module):
            found += [sub for sub in model.modules() if sub is not model]
        return found

    def describe(self, name: str, model: Any, formats: list[str]) -> Any:
        """``last_input`` is the example jms would use without one: a functional model's declared
        inputs with ``None`` dimensions as 2 (Keras has no forward hooks to record calls with)."""
        from ..discovery import ModelInfo

        sizes = [(math.prod(int(n or 0) for n in v.shape), _dtype_name(v.dtype))
                 for v in _variables(model)]  # fmt: skip
        float_dtypes = sorted({d for _, d in sizes if d.startswith(("float", "bfloat"))})
        return ModelInfo(
            name=name,
            class_name=type(model).__name__,
            num_params=sum(n for n, _ in sizes),
            size_bytes=sum(n * _itemsize(d) for n, d in sizes),
            device=self.device_of(model),
            dtype=",".join(float_dtypes) or "none",
            training=False,  # Keras has no global mode: jms calls it with training=False
            last_input=declared_specs(model),
            framework=self.name,
            formats=formats,
        )

    def load_into(self, model: Any, path: Path, fmt: Any, *, strict: bool, map_location: Any,
                  trusted: bool) -> None:  # fmt: skip
        """The weights of a ``weights`` or ``keras`` artifact; a mismatch changes nothing."""
        if not hasattr(model, "set_weights"):
            raise InvalidOptionError(
                f"load_into needs a Keras model for {path.name}; for a tf.Module load the "
                "SavedModel with jms.load."
            )
        before = [np.array(w, copy=True) for w in model.get_weights()]
        if fmt.name == "weights":
            fmt.check(path)  # before Keras reads it: no data from other files, no fill-value bombs
            try:
                with captured_output():
                    model.load_weights(str(path))
            except Exception as err:  # Keras raises ValueError with several messages
                model.set_weights(before)
                raise StateDictMismatchError(
                    f"The weights in {path.name} do not fit {type(model).__name__}: "
                    f"{_whole_message(err)} Check that the model is built with the same "
                    "configuration."
                ) from None
            return
        if fmt.name != "keras":
            raise InvalidOptionError(
                f"A {fmt.name} artifact holds no Keras weights to load into a model; export them "
                "with format='weights' or 'keras', or use jms.load for this one."
            )
        weights = fmt.load(path, trusted=trusted).get_weights()
        reshaped = [
            f"weight {i}: model {list(a.shape)}, artifact {list(b.shape)}"
            for i, (a, b) in enumerate(zip(before, weights))
            if a.shape != b.shape
        ]
        if len(weights) != len(before) or reshaped:
            counts = f"the model has {len(before)} weights, the artifact {len(weights)}"
            raise StateDictMismatchError(
                f"The weights in {path.name} do not fit {type(model).__name__}: "
                f"{'; '.join(reshaped) or counts}. Check that the model is built with the same "
                "configuration.",
                shape_mismatches=reshaped,
            )
        model.set_weights(weights)


class TFModuleAdapter(KerasAdapter):
    """A plain ``tf.Module``: called without ``training``, a tuple spread as positional arguments."""

    name = "tensorflow"
    label = "TensorFlow"
    noun = "tf.Module objects"
    call_name = "__call__()"
    spreads_tuples = True
    call_options: dict[str, Any] = {}

    def submodels(self, model: Any) -> list[Any]:
        return list(model.submodules)


def keras_backend() -> str | None:
    """The backend of the imported Keras, or None when Keras is not imported."""
    keras = sys.modules.get("keras")
    backend = getattr(getattr(keras, "backend", None), "backend", None)
    return backend() if callable(backend) else None


class NeedsTFBackend:
    """A format that goes through TensorFlow graphs (ONNX, SavedModel): it needs Keras'
    TensorFlow backend, and is offered and staged only with it."""

    name: str

    def available(self) -> bool:
        return keras_backend() in (None, "tensorflow")

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if not self.available():
            raise MissingDependencyError(
                f"format {self.name!r} needs Keras' TensorFlow backend; this Keras runs on "
                f"{keras_backend()!r}. Save with format='keras' or 'weights', or set "
                "KERAS_BACKEND=tensorflow before importing Keras."
            )
        return super().check_options(options)  # type: ignore[misc]


def require(module: str, what: str) -> Any:
    """Import an optional dependency, or ``MissingDependencyError`` saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"{what} needs the {module.split('.')[0]} package, which is not installed "
            f"({err}). Install the TensorFlow extra: {INSTALL_HINT}"
        ) from None


def signature(job: Any) -> list[Any]:
    """``tf.TensorSpec``s of the call arguments: the example's shapes, None on dynamic axes."""
    tf = require("tensorflow", "Exporting a graph")
    specs = []
    for name, tensor in zip(job.input_names, job.example.tensors):
        dynamic = job.dynamic_axes.get(name, {})
        shape = [None if d in dynamic else s for d, s in enumerate(tensor.shape)]
        dtype = str(tensor.dtype).removeprefix("torch.")
        specs.append(tf.TensorSpec(shape, tf.as_dtype(dtype), name=name))
    return list(job.example.layout.pack(specs))


def device_name(device: str) -> str:
    """``/job:localhost/.../device:GPU:1`` -> ``gpu:1``; torch's ``cuda:0`` stays."""
    tail = device.rsplit("device:", 1)[-1]
    kind, _, index = tail.partition(":")
    if kind.upper() in ("CPU", "GPU") and "device:" in device:
        return "cpu" if kind.upper() == "CPU" else f"gpu:{index or 0}"
    return device or "cpu"


def declared_input_names(model: Any) -> list[str]:
    """The names of a functional/Sequential model's ``keras.Input``s (else none)."""
    names = [getattr(i, "name", None) for i in _declared_inputs(model)]
    return names if all(n and n.isidentifier() for n in names) else []


def declared_none_dims(model: Any) -> list[list[int]]:
    """Per declared input of a functional/Sequential model, the dims declared as None."""
    return [[d for d, size in enumerate(t.shape) if size is None] for t in _declared_inputs(model)]


def declared_specs(model: Any) -> Any:
    """The specs of a functional/Sequential model's declared inputs, None dims as 2, named as the
    example of ``declared_example`` is (None: no declared inputs)."""
    from ..inputs import TensorSpec

    inputs = _declared_inputs(model)
    if not inputs:
        return None
    names = declared_input_names(model)
    if not names:
        names = ["input"] if len(inputs) == 1 else [f"input_{i}" for i in range(len(inputs))]
    return [
        TensorSpec(n, tuple(DEFAULT_BATCH if s is None else int(s) for s in t.shape),
                   _dtype_name(getattr(t, "dtype", "float32")), "cpu")
        for n, t in zip(names, inputs)
    ]  # fmt: skip


def declared_example(model: Any) -> Any:
    """Random normal inputs of a functional/Sequential model's declared shapes (None -> 2)."""
    specs = declared_specs(model)
    if specs is None:
        return None
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s.shape).astype(np.dtype(s.dtype)) for s in specs]
    return arrays[0] if len(arrays) == 1 else arrays


def _declared_inputs(model: Any) -> list[Any]:
    try:
        return list(model.inputs or [])
    except (AttributeError, ValueError):
        return []


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


def _leaves(value: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict):  # sorted, as tf.nest flattens (and so orders graph outputs)
        for key in sorted(value):
            yield from _leaves(value[key], (*path, str(key)))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, str(i)))
    elif value is not None:
        yield path, value


def _variables(model: Any) -> list[Any]:
    return list(getattr(model, "weights", None) or getattr(model, "variables", None) or [])


def _dtype_name(dtype: Any) -> str:
    return str(getattr(dtype, "name", dtype)).removeprefix("torch.")


def _itemsize(dtype: str) -> int:
    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        return 2 if "16" in dtype else 4


_ARRAY_DUMP = re.compile(r"\[[\[\]\s\d.eE+-]{40,}\]")  # a variable's values, printed


def _whole_message(err: BaseException, limit: int = 1000) -> str:
    """Keras' message on one line with its detail (which layer expected which shapes), less the
    values of the variables it prints."""
    text = _ARRAY_DUMP.sub("[...]", " ".join(strip_ansi(str(err)).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."
