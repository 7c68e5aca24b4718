"""Frameworks as thin adapters under the one flow (``stage``, parity, ``load_into``, ``find_models``).

An ``Adapter`` says, for one framework, how to call a model on example inputs, flatten its outputs
into names and arrays, find its device and float dtype, read its live weights, keep it as it was
while it runs, describe it for a model list, load weights into it, and which versions to record.
Everything else (options, probes, comparison, reports, writing) is the same for every framework.

The adapters are registered here by name and imported on first use, so naming a framework imports
none; ``framework_of`` looks only at frameworks already in ``sys.modules`` (an object of a
framework that was never imported cannot exist).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import InvalidOptionError, NotAModelError, shown

if TYPE_CHECKING:
    import numpy as np

    from ..inputs import ExampleInputs, TensorSpec

# framework name -> "module:class" of its adapter, imported on first use
REGISTRY: dict[str, str] = {
    "torch": "jupyter_modelsave.core.frameworks.torch:TorchAdapter",
    "keras": "jupyter_modelsave.core.frameworks.keras:KerasAdapter",
    "tensorflow": "jupyter_modelsave.core.frameworks.keras:TFModuleAdapter",
}
FRAMEWORKS = tuple(REGISTRY)
_ADAPTERS: dict[str, Adapter] = {}


# framework -> (module, class) of its models; the first match wins
_MODEL_CLASSES = {"keras": ("keras", "Model"), "tensorflow": ("tensorflow", "Module"),
                  "torch": ("torch.nn", "Module")}  # fmt: skip


def framework_of(obj: Any) -> str | None:
    """``"keras"``, ``"tensorflow"`` (a ``tf.Module``), ``"torch"`` or None.

    A Keras model on the torch backend is also an ``nn.Module``: "keras".
    """
    for framework, (module, name) in _MODEL_CLASSES.items():
        model_class = getattr(sys.modules.get(module), name, None)
        if isinstance(model_class, type) and isinstance(obj, model_class):
            return framework
    return None


def imported() -> list[str]:
    """The frameworks this process has imported (each is named after its package): only their
    models can exist, and describing the others would import them."""
    return [framework for framework in FRAMEWORKS if framework in sys.modules]


def adapter(framework: str) -> Adapter:
    """The adapter of ``framework`` (one of ``FRAMEWORKS``)."""
    if framework not in REGISTRY:
        raise InvalidOptionError(
            f"Unknown framework {shown(framework)}; choose one of: {', '.join(FRAMEWORKS)}."
        )
    if framework not in _ADAPTERS:
        module, cls = REGISTRY[framework].split(":")
        _ADAPTERS[framework] = getattr(importlib.import_module(module), cls)()
    return _ADAPTERS[framework]


def adapter_for(model: Any) -> Adapter:
    """The adapter of ``model``'s framework; ``NotAModelError`` for anything that is no model."""
    framework = framework_of(model)
    if framework is None:
        raise NotAModelError(
            f"{type(model).__name__} is not a model: expected a torch.nn.Module, a keras.Model or "
            "a tf.Module. jms.find_models() lists the models in your namespace."
        )
    return adapter(framework)


@dataclass
class Example:
    """The example inputs of one stage, and how jms got them."""

    inputs: ExampleInputs
    note: str = ""  # said first in the stage's warnings when jms chose the inputs
    # per input, the dims the model itself declares dynamic (Keras' None dims); kept dynamic in
    # the artifact when no dynamic_axes are given
    declared_dynamic: list[list[int]] | None = None


class Adapter:
    """What the one flow needs to know about a framework's models (one subclass per framework)."""

    name: ClassVar[str]  # "torch", "keras" or "tensorflow"
    label: ClassVar[str]  # as the surfaces show it: "PyTorch"
    noun: ClassVar[str]  # in messages: "PyTorch models"
    call_name: ClassVar[str]  # the method a failed call names: "forward()"
    example_help: ClassVar[str]  # how to pass example inputs
    example_hint: ClassVar[str]  # an example-input expression for placeholders
    # whether ``ModelInfo.last_input`` is a recorded call (else: the model's declared inputs)
    records_calls: ClassVar[bool] = False
    # the release check's precision variants and latency (``core/precision.py``, ``latency.py``)
    # are made for its models; others take their own precision only, and are not timed
    release_check: ClassVar[bool] = False
    # its models can be sharded over processes, which stage them together (``core/distributed``)
    shards: ClassVar[bool] = False

    def info(self) -> dict[str, Any]:
        """What the surfaces show about the framework (sent to the sidebar with the options)."""
        return {"label": self.label, "example_hint": self.example_hint,
                "records_calls": self.records_calls}  # fmt: skip

    def check_options(self, **options: Any) -> dict[str, Any]:
        """The framework's own options checked; another framework's, given, are refused."""
        wrong = [k for k, v in options.items() if v != _DEFAULTS[k]]
        if wrong:
            raise InvalidOptionError(
                f"{', '.join(wrong)} apply to PyTorch models only; leave them out for a "
                f"{self.label} model (it is exported where its variables live)."
            )
        return options

    def check_ready(self, model: Any, runs: bool) -> None:
        """Refuse a model that has nothing to export yet (no weights, or no values in them)."""

    def example(self, model: Any, example_inputs: Any, required: bool) -> Example | None:
        """The stage's example inputs; None when none was given, none is ``required`` and jms
        knows none (weights are saved without running the model)."""
        raise NotImplementedError

    def placed(self, model: Any, example: ExampleInputs | None, device: Any) -> tuple[Any, Any]:
        """The model to export (a copy on ``device`` when asked) and the inputs on its device."""
        return model, example

    def call(self, model: Any, inputs: ExampleInputs) -> Any:
        """The model's raw output on ``inputs``, in inference mode."""
        raise NotImplementedError

    def flatten(self, output: Any) -> tuple[list[str], list[Any]]:
        """Output names (``output``, ``output_<i>`` for a sequence, a dict's keys) and values."""
        raise NotImplementedError

    def to_numpy(self, value: Any) -> np.ndarray:
        """A value as numpy (bfloat16 as float32, which holds it exactly)."""
        raise NotImplementedError

    def spec(self, name: str, value: Any) -> TensorSpec:
        """Name, shape, dtype (as computed) and device of one output."""
        raise NotImplementedError

    def reference_dtypes(self, model: Any, values: list[Any]) -> list[str]:
        """The dtype whose default tolerances judge each output."""
        return [self.float_dtype(model)] * len(values)

    def device_of(self, model: Any) -> str:
        """Where the model's (first) weight lives: ``cpu``, ``cuda:0``, ``gpu:0``..."""
        raise NotImplementedError

    def float_dtype(self, model: Any) -> str:
        """The model's (first) floating-point weight dtype; "float32" when it has none."""
        raise NotImplementedError

    def live_weights(self, model: Any) -> dict[str, Any]:
        """Every weight by name, as the weight formats' round trip compares them."""
        raise NotImplementedError

    def bitwise_equal(self, live: Any, reloaded: Any) -> bool:
        raise NotImplementedError

    @contextlib.contextmanager
    def kept(self, model: Any, *, exporting: bool = False) -> Iterator[None]:
        """The model left as it was after the block (modes, flags, hooks), also on failure.

        ``exporting``: the block runs an exporter over the model.
        """
        yield

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """The live model's reference runs: inference, no reduced-precision matmuls."""
        yield

    @contextlib.contextmanager
    def staging(self, model: Any) -> Iterator[list[str]]:
        """Around a whole stage; yields what it changed for the export (for the warnings)."""
        yield []

    def opsets(self, exporter: str) -> tuple[int, int, str]:
        """(lowest, highest, what supports them) of the ONNX opsets this framework builds."""
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        """The framework's versions, recorded in artifacts and manifests."""
        raise NotImplementedError

    def submodels(self, model: Any) -> list[Any]:
        """The models nested in ``model`` (not listed beside it by ``find_models``)."""
        raise NotImplementedError

    def describe(self, name: str, model: Any, formats: list[str]) -> Any:
        """A ``ModelInfo`` from metadata only (no data read, no device sync)."""
        raise NotImplementedError

    def load_into(self, model: Any, path: Path, fmt: Any, *, strict: bool,
                  map_location: Any, trusted: bool) -> Any:  # fmt: skip
        """Copy a checked artifact's weights into ``model``, or change nothing and raise."""
        raise NotImplementedError


# the framework-specific options of ``stage`` (PyTorch's) and their defaults
_DEFAULTS = {"device": None, "exporter": "auto", "external_data": None}
