"""``jms.ModelSaveWidget``: stage, check and write a model from a notebook, with ipywidgets.

The widget composes standard ipywidgets only (no JavaScript of its own), so it renders wherever
ipywidgets does: JupyterLab, Notebook 7, VS Code, and rendered notebooks with embedded widget
state. It is a view over the service the sidebar's kernel side uses (``service.py``): the same
model list, example evaluation, format capabilities (which options a format takes), choices
offered (precision variants, generation) and ``jms.stage`` arguments; every step is a core call.

Its ``state`` moves ``pick -> staging -> staged -> written`` (or back to ``pick`` on discard);
a failed stage ends in ``error``, a failed write stays ``staged`` so the destination can be fixed.
The buttons call the methods ``stage()``, ``write()``, ``discard()`` and ``show_code()``, which are
also the Python API for driving the widget. Staging runs in the kernel's message handler, so
the kernel is busy exactly for the length of the export (the progress bar still updates).
Errors are shown inside the widget as ``ErrorType: message``; the exception is kept in
``widget.exception`` for debugging.
"""

from __future__ import annotations

import html
import sys
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import quote

import ipywidgets as w
from traitlets import Unicode

from . import _release
from ._codegen import defaults, export_call
from ._display import human_size
from .core.discovery import ModelInfo, model_info, start_recording
from .core.errors import InvalidOptionError, ModelSaveError
from .core.formats import describe, formats
from .core.inputs import TensorSpec
from .service import ModelSaveService, axis_rows, offered

_WIDE = {"description_width": "initial"}
_LINK = "color: var(--jp-content-link-color, #1976d2); text-decoration: underline"
# the error's colour is its border; the text keeps the theme's colour (readable in both themes)
_ERROR = "border-left: 4px solid var(--jp-error-color1, #cf222e); padding: 2px 8px; white-space: pre-wrap"


class ModelSaveWidget(w.VBox):
    """Pick a model, stage an export, read its parity report, then write or discard it.

    ``model``: a model object or its name in the namespace (default: the first model found).
    ``dest``: the initial destination (a folder ending in ``/`` gets versioned file names).
    ``namespace``: where to look for models (default: IPython's user namespace).
    """

    state = Unicode("pick", help="pick, staging, staged, written or error").tag(sync=True)
    error = Unicode("", help="the last error, as 'ErrorType: message'").tag(sync=True)

    def __init__(
        self,
        model: Any = None,
        *,
        dest: str = "exports/",
        namespace: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._service = ModelSaveService(_user_namespace() if namespace is None else namespace)
        self._infos: dict[str, ModelInfo] = {}  # what find_models said, by name
        # the dynamic-axes editor: (input name, dim, "dynamic?" checkbox, axis name) per dimension
        self.axes: list[tuple[str, int, w.Checkbox, w.Text]] = []
        self.staged: Any = None  # the StagedExport waiting for write/discard
        self._guessed = ""  # the example expression guessed from the first layer, while shown
        self.written: Path | None = None
        self.exception: BaseException | None = None

        self.model_picker = w.Dropdown(description="model")
        self.refresh_button = w.Button(
            icon="refresh", tooltip="List the namespace's models again", layout={"width": "3em"}
        )
        self.input_info = w.HTML()
        self.format_picker = w.Dropdown(description="format", options=formats())
        self.format_picker.value = defaults()["format"]
        self.opset_picker = w.Dropdown(description="opset")
        self.precision_picker = w.Dropdown(description="precision", options=[("model's own", None)])
        # ONNX with past key values (issue 18): shown where ``service.offered`` says it applies
        self.generation = w.Checkbox(
            description="for generation (with cache)", indent=False, layout={"display": "none"}
        )
        self.input_expr = w.Text(
            description="example input",
            placeholder="the last recorded call, or an expression",
            continuous_update=False,
            style=_WIDE,
            layout={"width": "32em"},
        )
        self.atol = w.Text(description="atol", placeholder="by dtype", layout={"width": "12em"})
        self.rtol = w.Text(description="rtol", placeholder="by dtype", layout={"width": "12em"})
        self.axes_box = w.VBox()
        self.stage_button = w.Button(description="Stage", button_style="primary", icon="cogs")
        self.progress = w.FloatProgress(max=1.0)
        self.report = w.HTML()
        self.summary = w.HTML()
        self.release = w.HTML()  # precision, size, latency, the diff against dest's last version
        self.dest = w.Text(value=dest, description="destination", style=_WIDE)
        self.allow_mismatch = w.Checkbox(description="write even if parity fails", indent=False)
        self.write_button = w.Button(description="Write", button_style="success", icon="save")
        self.discard_button = w.Button(description="Discard", icon="trash")
        self.code_button = w.Button(description="Copy as code", icon="code")
        self.code = w.Textarea(layout={"width": "100%", "display": "none"}, rows=2)
        self.result = w.HTML()
        self.error_box = w.HTML()

        super().__init__(
            children=[
                w.HBox([self.model_picker, self.refresh_button, self.input_info]),
                w.HBox(
                    [self.format_picker, self.opset_picker, self.precision_picker, self.generation]
                ),
                w.HBox([self.input_expr, self.atol, self.rtol]),
                self.axes_box,
                w.HBox([self.stage_button, self.progress]),
                self.report,
                self.summary,
                self.release,
                w.HBox([self.dest, self.allow_mismatch]),
                w.HBox([self.write_button, self.discard_button, self.code_button]),
                self.code,
                self.result,
                self.error_box,
            ],
            **kwargs,
        )
        self.add_class("jms-widget")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.stage_button.on_click(lambda _: self.stage())
        self.write_button.on_click(lambda _: self.write())
        self.discard_button.on_click(lambda _: self.discard())
        self.code_button.on_click(lambda _: self.show_code())
        self.model_picker.observe(lambda _: self._on_model_change(), "value")
        self.format_picker.observe(lambda _: self._follow_format(), "value")
        self.generation.observe(lambda _: self._follow_format(), "value")
        self.dest.observe(lambda _: self._show_release(), "value")
        self.input_expr.observe(lambda _: self._rebuild_axes(keep=True), "value")
        self.observe(lambda _: self._update_buttons(), "state")
        start_recording()
        _after_each_cell(self)
        self.refresh(model)

    # --- the Python API (what the buttons call) ---

    def refresh(self, model: Any = None) -> None:
        """List the namespace's models again; select ``model`` (an object or a name) if given."""
        self._infos = {i.name: i for i in self._service.infos()}
        if model is not None and not isinstance(model, str):
            name = next((n for n in self._infos if self._service.model(n) is model), None)
            if name is None:  # not bound in the namespace: list it under its class name
                name = type(model).__name__.lower()
                self._service.unbound[name] = model
                self._infos[name] = model_info(name, model)
            model = name
        current = model if model is not None else self.model_picker.value
        self.model_picker.options = list(self._infos)
        self.model_picker.value = (
            current if current in self._infos else next(iter(self._infos), None)
        )
        self._on_model_change()

    def pick(self, name: str) -> None:
        """Select the model bound to ``name`` (any staged export is discarded)."""
        if name not in self._infos:
            self.refresh()
        if name not in self._infos:
            self._fail(InvalidOptionError(f"No model named {name!r}; models: {list(self._infos)}."))
            return
        self.model_picker.value = name

    def mark_dynamic(self, tensor: str, dim: int, name: str | None = None) -> None:
        """Tick the dynamic-axes row of ``tensor``'s dimension ``dim`` (and rename its axis)."""
        for row_tensor, row_dim, box, text in self.axes:
            if (row_tensor, row_dim) == (tensor, dim):
                box.value = True
                if name is not None:
                    text.value = name
                return
        rows = ", ".join(f"{t}[{d}]" for t, d, _, _ in self.axes) or "none"
        self._fail(InvalidOptionError(f"No input dimension {tensor}[{dim}]; rows: {rows}."))

    def options(self) -> dict[str, Any]:
        """The ``jms.stage`` keyword arguments the controls describe (defaults left out; options
        the format does not take too), as the service turns them into arguments."""
        return self._service.stage_options(self._args())

    def stage(self) -> Any:
        """Stage the picked model with the chosen options; return the ``StagedExport`` or None."""
        self._drop_staged()
        self.state, self.error = "staging", ""
        self.report.value = self.summary.value = self.release.value = ""
        self.result.value = self.error_box.value = ""
        self.progress.bar_style, self.progress.value = "", 0.0
        try:
            if self.model_picker.value is None:
                raise InvalidOptionError(
                    "No model picked. Define a model (torch.nn.Module, keras.Model or tf.Module) "
                    "in the notebook, then press the refresh button."
                )
            staged = self._service.stage(self._args(), self._progress)
        except Exception as err:
            self.progress.bar_style = "danger"
            self._fail(err, "error")
            return None
        self.staged = staged
        self.progress.bar_style = "success"
        if staged.report is not None:
            self.report.value = staged.report._repr_html_() + _release.divergence_html(
                staged.report
            )
        self.summary.value = _summary_html(staged)
        self.state = "staged"
        self._show_release()
        return staged

    def write(self) -> Path | None:
        """Write the staged export to ``dest``; return the artifact's path or None."""
        if self.staged is None:
            self._fail(InvalidOptionError("Nothing is staged: press Stage first."))
            return None
        try:
            path = self.staged.write(self.dest.value, allow_mismatch=self.allow_mismatch.value)
        except Exception as err:
            self._fail(err, "staged")
            return None
        self._drop_staged()
        self.written, self.error, self.error_box.value = path, "", ""
        self.result.value = _written_html(path)
        self.state = "written"
        return path

    def diff(self) -> dict[str, Any] | None:
        """The staged export against the newest artifact of its name in ``dest`` (if a folder)."""
        return None if self.staged is None else self.staged.diff(self.dest.value)

    def discard(self) -> None:
        """Delete the staged export and go back to picking."""
        self._drop_staged()
        self.report.value = self.summary.value = self.release.value = self.error_box.value = ""
        self.progress.value, self.progress.bar_style = 0.0, ""
        self.error, self.state = "", "pick"

    def code_text(self) -> str:
        """The plain ``jms.export(...)`` call equivalent to the current settings."""
        name = self.model_picker.value or "model"
        options = self.options()
        if self.allow_mismatch.value:
            options["allow_mismatch"] = True
        return export_call(name, self.dest.value, self._expression(), **options)

    def show_code(self) -> str:
        """Show the equivalent code in a selectable text area (and return it)."""
        self.code.value = f"import jupyter_modelsave as jms\n\n{self.code_text()}"
        self.code.rows = self.code.value.count("\n") + 2
        self.code.layout.display = None
        return self.code.value

    # --- internals ---

    def _args(self) -> dict[str, Any]:
        """The choices as the sidebar sends them (``protocol.StageArgs``)."""
        axes: dict[str, dict[int, str]] = {}
        for tensor, dim, box, name in self.axes:
            if box.value:
                axes.setdefault(tensor, {})[dim] = name.value.strip()
        args = {"model": self.model_picker.value, "format": self.format_picker.value,
                "opset": self.opset_picker.value, "example": self.input_expr.value,
                "dynamic_axes": axes or None, "precision": self.precision_picker.value,
                "generation": self.generates()}  # fmt: skip
        for key, text in (("atol", self.atol), ("rtol", self.rtol)):
            args[key] = _number(key, text.value) if text.value.strip() else None
        return args

    def generates(self) -> bool:
        """Whether "for generation (with cache)" is offered (``service.offered``) and ticked."""
        return self.generation.layout.display != "none" and self.generation.value

    def _expression(self) -> str | None:
        """The example-input expression to use (``ModelSaveService.expression``)."""
        if self.model_picker.value is None:
            return self.input_expr.value.strip() or None
        return self._service.expression(self._args())

    def _on_model_change(self) -> None:
        self.discard()
        self.result.value = ""
        self._follow_framework()
        self._offer_guess()
        self._rebuild_axes()
        self._update_buttons()

    def _offer_guess(self) -> None:
        """Without a recorded call, put the example guessed from the first layer in the input
        field (editable); a guess shown earlier (untouched) goes when the model has a call."""
        info = self._infos.get(self.model_picker.value)
        guess = info.guessed_expression if info is not None else None
        if self.input_expr.value.strip() in ("", self._guessed):  # untouched
            self._guessed = guess or ""
            self.input_expr.value = self._guessed

    def _on_cell_ran(self) -> None:
        """After each cell: when the picked model got its first recorded call, use it."""
        name = self.model_picker.value
        if self.state == "staging" or name is None or not self._guessed:
            return
        info = model_info(name, self._service.model(name)) if name in self._infos else None
        if info is not None and info.last_input is not None:
            self._infos[name] = info
            self._offer_guess()
            self._rebuild_axes(keep=True)

    def _rebuild_axes(self, keep: bool = False) -> None:
        """One row per dimension of the example inputs: a checkbox (dynamic?) and an axis name;
        with ``keep``, rows for the same input and dimension keep their checkbox and name."""
        model, specs = self.model_picker.value, None
        try:
            if model is not None:
                specs = self._service.example_specs(model, self.input_expr.value)
        except Exception as err:
            self._fail(err, self.state)
        else:
            self.error_box.value = self.error = ""
        old = {(t, d): (box.value, name.value) for t, d, box, name in self.axes} if keep else {}
        self.axes = []
        for row in axis_rows(specs or []):
            ticked, name = old.get((row["input"], row["dim"]), (False, row["name"]))
            label = f"{row['input']}[{row['dim']}] = {row['size']}"
            self.axes.append((
                row["input"],
                row["dim"],
                w.Checkbox(ticked, description=label, indent=False),
                w.Text(name, layout={"width": "12em"}),
            ))  # fmt: skip
        rows = [w.HBox([box, name]) for _, _, box, name in self.axes]
        title = "dynamic axes (tick the dimensions that may change size)"
        self.axes_box.children = [w.Label(title), *rows] if rows else []
        self.input_info.value = _inputs_html(specs, model, self._guessed_layer())

    def _guessed_layer(self) -> str | None:
        """The layer the shown example was guessed from, while the guess is in the input field."""
        if not self._guessed or self.input_expr.value.strip() != self._guessed:
            return None
        from .core.example_guess import guess_example

        guess = guess_example(self._service.model(self.model_picker.value))
        return None if guess is None else guess.layer

    def _follow_framework(self) -> None:
        """Offer the formats that apply to the picked model (its framework's)."""
        info = self._infos.get(self.model_picker.value)
        names = info.formats if info is not None else formats()
        if tuple(names) != self.format_picker.options:
            current = self.format_picker.value
            self.format_picker.options = names
            self.format_picker.value = current if current in names else names[0]
        self._follow_format()

    def _follow_format(self) -> None:
        """Show the options the chosen format takes (its capabilities): opsets, dynamic axes;
        and what ``service.offered`` offers for the model: precision variants, generation (a
        ticked generation hides the dynamic axes: the graphs' are fixed)."""
        info = self._infos.get(self.model_picker.value)
        framework = info.framework if info is not None else "torch"
        takes = describe(self.format_picker.value, framework)
        offers = offered(info, takes) if info is not None else {"variants": [], "generation": False}
        low, high = takes["opsets"].get("auto", (1, 0))
        _choose(self.opset_picker,
                [("default", None), *((str(v), v) for v in range(high, low - 1, -1))])  # fmt: skip
        _choose(
            self.precision_picker, [("model's own", None), *((p, p) for p in offers["variants"])]
        )
        self.opset_picker.layout.display = None if takes["opsets"] else "none"
        self.precision_picker.layout.display = None if offers["variants"] else "none"
        self.generation.layout.display = None if offers["generation"] else "none"
        dynamic = takes["dynamic_axes"] and not self.generates()
        self.axes_box.layout.display = None if dynamic else "none"

    def _show_release(self) -> None:
        """Precision, size, latency and the diff against ``dest`` (its failure shown inline)."""
        if self.staged is None:
            self.release.value = ""
            return
        try:
            previous, problem = self.diff(), ""
        except ModelSaveError as err:
            previous, problem = None, f"<p><i>{html.escape(f'{type(err).__name__}: {err}')}</i></p>"
        self.release.value = _release.html(self.staged, previous) + problem

    def _progress(self, step: str, fraction: float) -> None:
        self.progress.value, self.progress.description = fraction, step

    def _drop_staged(self) -> None:
        if self.staged is not None:
            self.staged.discard()
            self.staged = None

    def _fail(self, err: BaseException, state: str | None = None) -> None:
        self.exception = err
        self.error = f"{type(err).__name__}: {err}"
        self.error_box.value = f'<div style="{_ERROR}">{html.escape(self.error)}</div>'
        if state is not None:
            self.state = state

    def _update_buttons(self) -> None:
        self.stage_button.disabled = self.state == "staging" or self.model_picker.value is None
        self.write_button.disabled = self.discard_button.disabled = self.state != "staged"


def widget(model: Any = None, **kwargs: Any) -> ModelSaveWidget:
    """``jms.widget()``: a ``ModelSaveWidget`` (see its docstring for the arguments)."""
    return ModelSaveWidget(model, **kwargs)


def file_browser_url(path: Path) -> str | None:
    """``<base_url>lab/tree/<folder>``: the artifact's folder in JupyterLab's file browser.

    The folder is taken relative to the root of the running Jupyter server that holds it (the
    deepest root, read from ``jupyter_server``'s runtime files); when no server is found, relative
    to the kernel's working directory with base URL ``/``. None when neither holds it.
    """
    folder = Path(path).resolve().parent
    try:
        from jupyter_server.serverapp import list_running_servers

        roots = [(Path(s["root_dir"]).resolve(), s["base_url"]) for s in list_running_servers()]
    except Exception:  # no server metadata readable: fall back on the working directory
        roots = []
    inside = [(root, base) for root, base in roots if folder.is_relative_to(root)]
    if inside:
        root, base = max(inside, key=lambda rb: len(rb[0].parts))
    elif folder.is_relative_to(Path.cwd().resolve()):
        root, base = Path.cwd().resolve(), "/"
    else:
        return None
    relative = folder.relative_to(root).as_posix()
    return f"{base}lab/tree/{quote('' if relative == '.' else relative)}"


def _choose(picker: w.Dropdown, options: list[tuple[str, Any]]) -> None:
    """Give ``picker`` these options, keeping its value when it is still one of them."""
    if options != list(picker.options):
        current = picker.value
        picker.options = options
        picker.value = current if current in dict(options).values() else None


def _user_namespace() -> dict[str, Any]:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell.user_ns if shell is not None else {}


def _number(key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidOptionError(f"{key} must be a number such as 1e-4, got {text!r}.") from None


def _inputs_html(specs: list[TensorSpec] | None, name: str | None, guessed: str | None) -> str:
    if name is None:
        return "<i>no models in the namespace: define one, then refresh</i>"
    if specs is None:
        return f"<i>no recorded input: run {html.escape(name)}(...) once, or give an expression</i>"
    shapes = ", ".join(f"{s.name} {list(s.shape)} {s.dtype}" for s in specs)
    text = f"example: <code>{html.escape(shapes)}</code>"
    if guessed:
        text += (
            f" (guessed from its first layer, {html.escape(guessed)}: edit it, or run the model)"
        )
    return text


def _after_each_cell(widget: ModelSaveWidget) -> None:
    """Call ``widget._on_cell_ran`` after each IPython cell, for as long as the widget lives."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return
    ref = weakref.ref(widget)

    def after_cell(*_: Any) -> None:
        alive = ref()
        if alive is None:
            shell.events.unregister("post_run_cell", after_cell)
        else:
            alive._on_cell_ran()

    shell.events.register("post_run_cell", after_cell)


def _summary_html(staged: Any) -> str:
    rows = [
        ("format", f"{staged.format} via {staged.exporter}"),
        ("opset", staged.opset),
        ("size", human_size(staged.size_bytes)),
        ("sha256", staged.sha256),
    ]
    cells = "".join(
        f'<tr><th style="text-align:left">{k}</th><td><code>{html.escape(str(v))}</code></td></tr>'
        for k, v in rows
        if v is not None
    )
    return f'<table class="jms-staged">{cells}</table>'


def _written_html(path: Path) -> str:
    url, wrote = file_browser_url(path), f"<b>Wrote</b> <code>{html.escape(str(path))}</code>"
    if not url:
        return wrote
    return (
        f'{wrote} &middot; <a href="{html.escape(url)}" target="_blank" rel="noopener" '
        f'style="{_LINK}">show in the file browser</a>'
    )
