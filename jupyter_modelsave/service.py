"""The kernel-side service behind the notebook surfaces: one implementation, many views.

The sidebar's Comm handler (``kernel.py``) and the widget (``widgets.py``) both call it, on the
user's namespace, for the models, the formats' capabilities, the example, the choices a form
offers beyond a format's own (``offered``), a surface's choices (``protocol.StageArgs``) as
``jms.stage`` keyword arguments (``stage_options``, ``expression``) and the stage itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._codegen import defaults
from .core.discovery import ModelInfo, find_models, model_info
from .core.errors import InvalidOptionError, shown
from .core.example_guess import evaluate_example, guess_example
from .core.formats import capabilities, describe
from .core.frameworks import adapter, adapter_for, imported
from .core.job import Progress
from .core.options import DEFAULT_TOLERANCES, artifact_name_from, default_axis_name
from .core.version import __version__
from .protocol import AxisRow, ModelsReply, OptionsReply, StageArgs

if TYPE_CHECKING:
    from .core.inputs import TensorSpec


class ModelSaveService:
    """The operations of the notebook surfaces on one namespace (IPython's ``user_ns``)."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self.unbound: dict[str, Any] = {}  # models a surface was given but no name holds

    def infos(self) -> list[ModelInfo]:
        """The namespace's models (``jms.find_models``: metadata only, cheap)."""
        return find_models(self.namespace)

    def models(self) -> ModelsReply:
        return {"models": [described(info) for info in self.infos()]}  # type: ignore[typeddict-item]

    def options(self) -> OptionsReply:
        """The frameworks with their formats' capabilities, and the default tolerances.

        Only the frameworks the kernel has imported are described (describing one imports it,
        and no model of another can exist yet): a surface asks again when it lists a model of a
        framework it has no description of.
        """
        return {
            "version": __version__,
            "frameworks": {
                fw: {**adapter(fw).info(), "formats": capabilities(fw)} for fw in imported()
            },
            "tolerances": {k: list(v) for k, v in DEFAULT_TOLERANCES.items()},
        }  # type: ignore[typeddict-item]

    def model(self, name: Any) -> Any:
        for models in (self.namespace, self.unbound):
            if isinstance(name, str) and name in models:
                return models[name]
        raise InvalidOptionError(
            f"No variable named {shown(name)} in the kernel; run the cell that defines it."
        )

    def example(self, expression: str | None) -> Any:
        """``None``: the last recorded call; else a Python expression (not blank: ``expression``)
        evaluated in the namespace (``torch`` is there even when the user imported it under
        another name)."""
        if expression is None:
            return None
        try:
            return evaluate_example(expression, self.namespace)  # the user's own namespace
        except KeyboardInterrupt:
            raise  # the sidebar's Cancel
        except BaseException as err:  # SystemExit, GeneratorExit: the input's fault
            raise InvalidOptionError(
                f"example input {shown(expression)} could not be evaluated: "
                f"{type(err).__name__}: {err}"
            ) from None

    def example_specs(self, name: str, expression: str | None) -> list[TensorSpec] | None:
        """The inputs a dynamic-axes editor shows: the last recorded call's (no expression), the
        guess's (the guessed expression), else the evaluated expression's."""
        model, text = self.model(name), (expression or "").strip()
        info = model_info(name, model)
        if not text or text == info.guessed_expression:
            return info.last_input or (
                [info.guessed_input] if text and info.guessed_input else None
            )
        return adapter_for(model).example(model, self.example(text), True).inputs.specs

    def expression(self, args: StageArgs) -> str | None:
        """The example expression to evaluate: none for the guess a format needing no inputs
        would not use (weights are saved without running the model)."""
        text = (args.get("example") or "").strip()
        if not text:
            return None
        model = self.model(args["model"])
        guess = guess_example(model)
        if guess and text == guess.expression and not self._takes(args, model)["needs_inputs"]:
            return None
        return text

    def stage_options(self, args: StageArgs) -> dict[str, Any]:
        """The ``jms.stage`` keyword arguments the choices describe (null ones left out; options
        the chosen format does not take too: ``exporter``, ``opset``, ``dynamic_axes``,
        ``precision`` for a format of one precision, ``generation`` for a format that cannot hold
        it). A generation export takes no dynamic axes and no precision (its graphs are fixed)."""
        takes = self._takes(args, self.model(args["model"]))
        generation = bool(args.get("generation")) and takes["generation"]
        taken = {"opset": takes["opsets"], "dynamic_axes": takes["dynamic_axes"] and not generation,
                 "exporter": takes["exporters"], "generation": generation,
                 "precision": len(takes["precisions"]) > 1 and not generation}  # fmt: skip
        # in the order of stage's parameters, so that generated code reads the same everywhere
        keys = ("format", "opset", "dynamic_axes", "atol", "rtol", "exporter", "name",
                "generation", "precision", "latency")  # fmt: skip
        return {k: args[k] for k in keys if taken.get(k, True) and args.get(k) not in (None, {})}

    def stage(self, args: StageArgs, progress: Progress | None) -> Any:
        """``jms.stage`` the named model as the choices say; named after its variable."""
        from .core.staging import stage

        model = self.model(args["model"])
        options = {"name": artifact_name_from(args["model"]), **self.stage_options(args)}
        return stage(model, self.example(self.expression(args)), progress=progress, **options)

    def _takes(self, args: StageArgs, model: Any) -> dict[str, Any]:
        """The capabilities of the chosen format (the stage's default when none is chosen)."""
        name = args.get("format") or defaults()["format"]
        try:
            return describe(name, adapter_for(model).name)
        except InvalidOptionError:  # an unknown format: stage refuses it, naming the formats
            return {"needs_inputs": True, "exporters": [], "opsets": {}, "dynamic_axes": True,
                    "precisions": [], "generation": False}  # fmt: skip


def offered(info: ModelInfo, takes: dict[str, Any]) -> dict[str, Any]:
    """What a form offers for a model in a format besides the format's capabilities ``takes``
    (``protocol.FormatInfo``), as the sidebar's form does: ``variants``, the precisions to stage
    a variant in (the format's, for a model they are made of; fp32 is its own), and
    ``generation``, whether "for generation" applies (a model that can generate, in a format
    that holds it)."""
    return {"variants": [p for p in takes["precisions"] if p != "fp32"] if info.variants else [],
            "generation": info.can_generate and takes["generation"]}  # fmt: skip


def described(info: ModelInfo) -> dict[str, Any]:
    """``ModelInfo.to_dict()`` with the rows of the dynamic-axes editors (``axis_rows``) of the
    inputs a form starts from: the last recorded call, else the guess from the first layer."""
    start = info.last_input or ([info.guessed_input] if info.guessed_input else [])
    return {**info.to_dict(), "axes": axis_rows(start)}


def axis_rows(specs: list[TensorSpec]) -> list[AxisRow]:
    """One row per dimension of each input, with the name a new dynamic axis gets there."""
    return [
        {"input": s.name, "dim": dim, "size": size, "name": default_axis_name(s.name, dim)}
        for s in specs
        for dim, size in enumerate(s.shape)
    ]
