"""The ``%modelsave`` line magic: list the namespace's models, or stage, check and write one.

Loaded with ``%load_ext jupyter_modelsave``. Every step is a core call (``find_models``,
``stage``, ``StagedExport.write``); the magic only parses arguments and shows results. As the
sidebar and the widget offer only the options a format takes, it refuses ``--opset`` and
``--dynamic`` for a format whose capabilities say it takes none (``core.formats.describe``).
Bad arguments raise IPython's ``UsageError`` (a usage message, no traceback); a
``jms.ModelSaveError`` is shown as one line, ``ErrorType: message``, and still fails the cell so
that "Run all" stops there.
"""

from __future__ import annotations

import argparse
import html
import textwrap
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import HTML, display

from . import _release
from ._codegen import defaults, export_call
from ._display import human_size
from .core.discovery import ModelInfo, find_models, start_recording
from .core.errors import MissingInputError, ModelSaveError
from .core.formats import describe
from .core.frameworks import adapter, adapter_for
from .core.parity import divergence_text


def dynamic_spec(text: str) -> tuple[str, dict[int, str]]:
    """Parse ``--dynamic`` values: ``input:0=batch,1=seq`` -> ``("input", {0: "batch", 1: "seq"})``."""
    tensor, _, dims = text.partition(":")
    try:
        axes = {int(d): n.strip() for d, _, n in (item.partition("=") for item in dims.split(","))}
    except ValueError:
        axes = {}
    if not tensor.strip() or not axes or not all(axes.values()):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not INPUT:DIM=NAME[,DIM=NAME...], e.g. --dynamic input:0=batch,1=seq"
        )
    return tensor.strip(), axes


@magics_class
class ModelSaveMagics(Magics):
    """``%modelsave`` (see ``modelsave``'s docstring, shown by ``%modelsave?``)."""

    @magic_arguments()
    @argument("model", nargs="?", help="the model: a name (or expression) in your namespace")
    @argument("dest", nargs="?", help="a folder (existing, or ending in /) or an exact file path")
    @argument("--format", help="artifact format (jms.formats() lists them; default onnx)")
    @argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    @argument(
        "--dynamic",
        action="append",
        type=dynamic_spec,
        metavar="INPUT:DIM=NAME[,DIM=NAME]",
        help="dynamic axes of one input, e.g. input:0=batch,1=seq (repeat for more inputs)",
    )
    @argument("--input", metavar="EXPR", help="example inputs, evaluated in your namespace")
    @argument(
        "--generation",
        action="store_true",
        help="ONNX with past key values, checked on a greedy loop (transformers language models)",
    )
    @argument("--atol", type=float, help="absolute parity tolerance (default: by dtype)")
    @argument("--rtol", type=float, help="relative parity tolerance (default: by dtype)")
    @argument("--no-parity", action="store_true", help="skip the parity check")
    @argument(
        "--precision",
        metavar="P",
        help="fp32, fp16, bf16 or int8 (default: the model's own; jms.precisions(format) lists "
        "what this machine takes)",
    )
    @argument("--calibrate", action="store_true", help="int8: static, calibrated on the probes")
    @argument("--no-latency", action="store_true", help="skip the latency measurement")
    @argument("--allow-mismatch", action="store_true", help="write even if parity fails")
    @argument("--overwrite", action="store_true", help="replace an existing file at DEST")
    @argument("--name", help="artifact name (default: the model's variable name)")
    @argument("--version", help="artifact version (default: next patch version in DEST)")
    @line_magic
    def modelsave(self, line: str) -> None:
        """Without arguments: a table of the models in your namespace.

        With MODEL DEST: stage MODEL, show the parity report, write the artifact and its manifest
        to DEST when parity passes, and print the path, the sha256, the release check
        (precision, size, latency, the diff against the previous version) and the equivalent
        ``jms.export(...)`` call.
        """
        start_recording()  # as %load_ext does (idempotent)
        try:
            args = parse_argstring(self.modelsave, line)
        except (UsageError, ValueError) as err:  # ValueError: unbalanced quotes
            raise UsageError(f"{err}\n{usage(self.modelsave.parser)}") from None
        if args.model is None:
            display(HTML(models_html(find_models(self.shell.user_ns))))
            return
        if args.dest is None:
            raise UsageError(
                "DEST is missing: %modelsave MODEL DEST, e.g. %modelsave model exports/"
            )
        try:
            self._export(args)
        except ModelSaveError as err:
            # one line instead of a traceback; IPython calls this when showing the error
            message = [f"{type(err).__name__}: {err}"]
            err._render_traceback_ = lambda: message  # type: ignore[attr-defined]
            raise

    def _export(self, args: argparse.Namespace) -> None:
        from .core.staging import stage  # torch: only when a model is exported

        model = self._evaluate("MODEL", args.model)
        example = None if args.input is None else self._evaluate("--input", args.input)
        options = stage_options(args)
        refuse_options_not_taken(options, model)
        write_options = {k: getattr(args, k) for k in ("version", "overwrite", "allow_mismatch")}
        with Progress(self.shell) as progress:
            try:
                staged = stage(model, example, progress=progress, **options)
            except MissingInputError as err:
                raise MissingInputError(f"{err}{guess_hint(model)}") from None
        try:
            if staged.report is not None:
                display(HTML(staged.report._repr_html_()))
                if text := divergence_text(staged.report):  # under the table: where it differs
                    print(text)
            path = staged.write(args.dest, **write_options)
        finally:
            staged.discard()
        code = export_call(args.model, args.dest, args.input, **options, **write_options)
        for label, text in _release.lines(staged, _previous(path)):
            print(f"{label}: {text}")
        print(f"Wrote {path}\nsha256 {staged.sha256}\nEquivalent code: {code}")

    def _evaluate(self, what: str, expr: str) -> Any:
        try:
            return self.shell.ev(expr)
        except Exception as err:
            hint = " (%modelsave alone lists your models)" if what == "MODEL" else ""
            raise UsageError(
                f"{what} {expr!r} could not be evaluated: {type(err).__name__}: {err}{hint}"
            ) from None


def usage(parser: argparse.ArgumentParser) -> str:
    """``usage: %modelsave [--format FORMAT] ...`` (IPython formats it as reST, after ``::``)."""
    items: list[str] = []  # "[--input EXPR]" stays on one line
    for word in parser.format_usage().split()[1:]:
        if items and items[-1].count("[") > items[-1].count("]"):
            items[-1] += f"\0{word}"  # a space that textwrap does not break at
        else:
            items.append(word)
    lines = textwrap.wrap(" ".join(items), 100, initial_indent="usage: ", subsequent_indent="    ")
    return "\n".join(lines).replace("\0", " ")


def refuse_options_not_taken(options: dict[str, Any], model: Any) -> None:
    """``UsageError`` for ``--opset`` or ``--dynamic`` with a format that takes no such option."""
    fmt = options.get("format", defaults()["format"])
    try:
        takes = describe(fmt, adapter_for(model).name)
    except ModelSaveError:
        return  # not a model, or an unknown format: stage says so
    flags = (
        ("--opset", "opset", takes["opsets"]),
        ("--dynamic", "dynamic_axes", takes["dynamic_axes"]),
    )
    wrong = [flag for flag, key, taken in flags if key in options and not taken]
    if wrong:
        raise UsageError(
            f"format {fmt!r} takes no {' or '.join(wrong)} ({takes['description']}); leave it out."
        )


def stage_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``jms.stage`` keyword arguments named on the command line (others keep their defaults)."""
    dynamic: dict[str, dict[int, str]] = {}
    for tensor, axes in args.dynamic or ():
        dynamic.setdefault(tensor, {}).update(axes)
    options = {
        "format": args.format,
        "opset": args.opset,
        "atol": args.atol,
        "rtol": args.rtol,
        "name": args.name,
        "dynamic_axes": dynamic or None,
        "parity": False if args.no_parity else None,
        "generation": args.generation or None,
        "precision": args.precision,
        "calibration": args.calibrate or None,
        "latency": False if args.no_latency else None,
    }
    return {k: v for k, v in options.items() if v is not None}


def _previous(path: Any) -> dict[str, Any] | None:
    """The ``previous`` entry ``write`` recorded in the manifest, if any."""
    from .core.manifest import read_manifest

    try:
        entry = (read_manifest(path) or {}).get("previous")
    except ModelSaveError:
        return None
    return entry if isinstance(entry, dict) else None


class Progress:
    """A progress bar fed by ``stage(progress=...)``: an ipywidget in a kernel, else text lines."""

    def __init__(self, shell: Any) -> None:
        self.bar = None
        if getattr(shell, "kernel", None) is not None:  # ipykernel: widgets can render
            import ipywidgets

            self.bar = ipywidgets.FloatProgress(
                max=1.0, description="stage", style={"description_width": "initial"}
            )
            display(self.bar)

    def __call__(self, step: str, fraction: float) -> None:
        if self.bar is None:
            print(f"{step} {fraction:.0%}")
        else:
            self.bar.value, self.bar.description = fraction, step

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self.bar is not None:
            self.bar.bar_style = "danger" if exc_type else "success"


def models_html(infos: list[ModelInfo]) -> str:
    """An HTML table of ``find_models()``: name, class, parameters, size, device, dtype, inputs."""
    if not infos:
        return (
            "<p>No models in the namespace. Define one (a PyTorch <code>nn.Module</code>, a "
            "<code>keras.Model</code> or a <code>tf.Module</code>) and run <code>%modelsave</code> "
            "again.</p>"
        )
    columns = ("name", "class", "parameters", "size", "device", "dtype", "last input",
               "framework", "formats")  # fmt: skip
    head = "".join(f"<th>{h}</th>" for h in columns)
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(cell))}</td>"
            for cell in (
                i.name,
                i.class_name,
                f"{i.num_params:,}",
                human_size(i.size_bytes),
                f"{i.device}, {i.sharding}" if i.sharding else i.device,
                i.dtype,
                input_shapes(i),
                i.framework,
                ", ".join(i.formats),
            )
        )
        + "</tr>"
        for i in infos
    )
    return f'<table class="jms-models"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def guess_hint(model: Any) -> str:
    """`` Or try --input "torch.randn(1, 3, 224, 224)" (from its first layer, Conv2d).``, or ""."""
    from .core.example_guess import guess_example

    guess = guess_example(model)
    if guess is None:
        return ""
    return f' Or try --input "{guess.expression}" (from its first layer, {guess.layer}).'


def input_shapes(info: ModelInfo) -> str:
    """``image: [2, 3, 32, 32] float32``, or a hint when no forward call was recorded yet.

    Keras records no calls: its shapes are the declared ones, labelled so (None shown as the 2
    a stand-in example holds, and kept dynamic in the export).
    """
    recorded = adapter(info.framework).records_calls
    if info.last_input is None and info.guessed_expression:
        return f"none yet: run the model once, or --input {info.guessed_expression!r}"
    if info.last_input is None:
        return "none yet: run the model once" if recorded else "none: use --input"
    shapes = ", ".join(f"{s.name}: {list(s.shape)} {s.dtype}" for s in info.last_input)
    return shapes if recorded else f"declared (None as 2): {shapes}"
