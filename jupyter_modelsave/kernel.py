"""The kernel side of the JupyterLab sidebar: a Comm target with a small request/response protocol.

The sidebar installs it with a silent, history-free execute of
``import jupyter_modelsave.kernel as _jms_kernel; _jms_kernel.install(...)`` and then opens a
Comm on ``COMM_TARGET``. Each message from the sidebar is ``{"id", "op", "args"}``; the kernel
answers ``{"id", "event": "progress", "step", "fraction"}`` while it works and one
``{"id", "event": "reply", "ok": true, "result"}`` or ``{..., "ok": false, "error": {"type",
"message"}}`` at the end. Operations: ``models``, ``options``, ``stage``, ``write``, ``discard``.

Every step is the core's (``jms.find_models``, ``jms.stage``, ``StagedExport.write``/
``discard``); this module only translates JSON to calls and publishes staged files for the
server extension (see ``_paths``). A staging runs on the kernel's main thread, so the sidebar
cancels it by interrupting the kernel (``KeyboardInterrupt``, answered as ``Cancelled``).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from ._paths import INDEX_FILE, STAGING_ID, default_staging_dir
from .core.errors import InvalidOptionError

COMM_TARGET = "jupyter_modelsave"
# Artifacts above this size are shown in Netron from a copy without weights (shapes kept).
GRAPH_FULL_BYTES = 32 * 1024**2

Progress = Callable[[str, float], None]


def _no_progress(step: str, fraction: float) -> None:
    """Silent progress callback."""


class ModelSaveKernel:
    """The operations the sidebar asks for, on one namespace (IPython's ``user_ns`` in a kernel)."""

    def __init__(
        self,
        namespace: dict[str, Any],
        staging_dir: str | Path | None = None,
        root_dir: str | Path | None = None,
    ) -> None:
        self.namespace = namespace
        self.staging_dir = Path(staging_dir) if staging_dir else default_staging_dir()
        self.root_dir = Path(root_dir or os.getcwd()).resolve()
        self.staged: dict[str, Any] = {}  # staging id -> StagedExport
        atexit.register(self.discard_all)

    def handle(self, op: str, args: dict[str, Any], progress: Progress = _no_progress) -> Any:
        """Run one operation; raises ``ModelSaveError`` for the user's mistakes."""
        verbs = {
            "models": self.models,
            "options": self.options,
            "stage": lambda a: self.stage(a, progress),
            "write": self.write,
            "discard": self.discard,
        }
        verb = verbs.get(op)
        if verb is None:
            raise InvalidOptionError(f"Unknown operation {op!r}; known: {', '.join(verbs)}.")
        return verb(args)

    def respond(self, message: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> None:
        """Answer one request through ``send``: progress events, then exactly one reply."""
        rid = message.get("id")

        def progress(step: str, fraction: float) -> None:
            send({"id": rid, "event": "progress", "step": step, "fraction": fraction})

        try:
            result = self.handle(str(message.get("op")), message.get("args") or {}, progress)
            reply = {"ok": True, "result": result}
        except KeyboardInterrupt:
            reply = {"ok": False, "error": {"type": "Cancelled", "message": "Cancelled."}}
        except Exception as err:  # every failure must reach the sidebar
            reply = {"ok": False, "error": {"type": type(err).__name__, "message": str(err)}}
        send({"id": rid, "event": "reply", **reply})

    # --- operations ---

    def models(self, args: dict[str, Any]) -> dict[str, Any]:
        """The namespace's models (``jms.find_models``: metadata only, cheap)."""
        from .core.discovery import find_models

        return {"models": [m.to_dict() for m in find_models(self.namespace)]}

    def options(self, args: dict[str, Any]) -> dict[str, Any]:
        """What the options form offers: formats, opset ranges per exporter, default tolerances."""
        from .core.formats import formats
        from .core.options import DEFAULT_TOLERANCES, EXPORTERS, opset_range

        return {
            "version": __version__,
            "formats": formats(),
            "exporters": list(EXPORTERS),
            "opsets": {e: list(opset_range(e)) for e in EXPORTERS},
            "tolerances": {k: list(v) for k, v in DEFAULT_TOLERANCES.items()},
        }

    def stage(self, args: dict[str, Any], progress: Progress = _no_progress) -> dict[str, Any]:
        """``jms.stage`` the named model, publish it for the server, return its summary."""
        from .core.staging import stage

        model = self._model(args.get("model"))
        options = {
            key: args[key]
            for key in ("format", "opset", "exporter", "atol", "rtol", "name")
            if args.get(key) is not None
        }
        options.setdefault("name", args["model"])  # the variable's name, as the sidebar shows it
        if args.get("dynamic_axes"):
            options["dynamic_axes"] = _dynamic_axes(args["dynamic_axes"])
        staged = stage(model, self._example(args.get("example")), progress=progress, **options)
        sid = uuid.uuid4().hex
        self.staged[sid] = staged
        try:
            files = publish(staged, self.staging_dir / sid)
        except BaseException:
            self.discard({"id": sid})
            raise
        return {"id": sid, **summary(staged), **files}

    def write(self, args: dict[str, Any]) -> dict[str, Any]:
        """``StagedExport.write`` into a folder below the server's root; return root-relative paths."""
        staged = self._staged(args.get("id"))
        folder = self._inside_root(args.get("folder") or "")
        path = staged.write(
            f"{folder}{os.sep}",
            name=args.get("name") or None,
            version=args.get("version") or None,
            overwrite=bool(args.get("overwrite")),
            allow_mismatch=bool(args.get("allow_mismatch")),
        )
        relative = Path(path).resolve().relative_to(self.root_dir).as_posix()
        return {"path": relative, "manifest": f"{relative}.json"}

    def discard(self, args: dict[str, Any]) -> dict[str, Any]:
        """Drop a staged export: the core's work folder and the published copy."""
        sid = args.get("id")
        staged = self.staged.pop(sid, None) if isinstance(sid, str) else None
        if staged is not None:
            staged.discard()
        if isinstance(sid, str) and STAGING_ID.match(sid):
            shutil.rmtree(self.staging_dir / sid, ignore_errors=True)
        return {"discarded": staged is not None}

    def discard_all(self) -> None:
        for sid in list(self.staged):
            self.discard({"id": sid})

    # --- helpers ---

    def _model(self, name: Any) -> Any:
        if not isinstance(name, str) or name not in self.namespace:
            raise InvalidOptionError(
                f"No variable named {name!r} in the kernel; run the cell that defines it."
            )
        return self.namespace[name]

    def _example(self, expression: Any) -> Any:
        """``None``: the last recorded call; a string: a Python expression in the namespace."""
        if expression is None or (isinstance(expression, str) and not expression.strip()):
            return None
        if not isinstance(expression, str):
            raise InvalidOptionError("The example input must be a Python expression.")
        try:
            return eval(expression, self.namespace)  # the user's own kernel and namespace
        except Exception as err:
            raise InvalidOptionError(
                f"The example input {expression!r} failed: {type(err).__name__}: {err}"
            ) from None

    def _staged(self, sid: Any) -> Any:
        staged = self.staged.get(sid) if isinstance(sid, str) else None
        if staged is None:
            raise InvalidOptionError(
                "This staged export is gone (discarded, or the kernel restarted); stage it again."
            )
        return staged

    def _inside_root(self, folder: Any) -> Path:
        """An existing-or-new folder inside the server's root; refuses absolute paths and ``..``."""
        if not isinstance(folder, str) or Path(folder).is_absolute():
            raise InvalidOptionError(
                f"Folder {folder!r} must be relative to the Jupyter root, e.g. 'exports'."
            )
        target = (self.root_dir / folder).resolve()
        if not target.is_relative_to(self.root_dir):
            raise InvalidOptionError(f"Folder {folder!r} is outside the Jupyter root.")
        return target


def _dynamic_axes(value: Any) -> Any:
    """JSON has string keys: ``{"input": {"0": "batch"}}`` -> ``{"input": {0: "batch"}}``."""
    if not isinstance(value, dict):
        return value
    return {
        tensor: {int(d) if str(d).lstrip("-").isdigit() else d: n for d, n in axes.items()}
        if isinstance(axes, dict)
        else axes
        for tensor, axes in value.items()
    }


def summary(staged: Any) -> dict[str, Any]:
    """The JSON the sidebar's review shows (``report`` is ``ParityReport.to_dict()``)."""
    return {
        "name": staged.name,
        "format": staged.format,
        "exporter": staged.exporter,
        "opset": staged.opset,
        "size_bytes": staged.size_bytes,
        "sha256": staged.sha256,
        "warnings": list(staged.warnings),
        "report": None if staged.report is None else staged.report.to_dict(),
        "inputs": [s.to_dict() for s in staged.input_specs],
        "outputs": [s.to_dict() for s in staged.output_specs],
    }


def publish(staged: Any, folder: Path) -> dict[str, Any]:
    """Link (else copy) the staged artifact into ``folder`` with an ``index.json`` for the server.

    ONNX artifacts also get a graph for Netron: the artifact itself, or above
    ``GRAPH_FULL_BYTES`` (and for folder artifacts) a copy without weights.
    """
    folder.mkdir(mode=0o700, parents=True)
    artifact = f"{staged.name}{staged.path.suffix}"
    _link_or_copy(staged.path, folder / artifact)
    graph = None
    if staged.format == "onnx":
        graph = artifact
        if staged.path.is_dir() or staged.size_bytes > GRAPH_FULL_BYTES:
            graph = f"{staged.name}.graph.onnx"
            strip_weights(staged.path, folder / graph)
    index = {
        "artifact": artifact,
        "graph": graph,
        "sha256": staged.sha256,
        "size_bytes": staged.size_bytes,
        "pid": os.getpid(),
    }
    (folder / INDEX_FILE).write_text(json.dumps(index))
    return {"file": artifact, "graph": graph, "folder_artifact": staged.path.is_dir()}


def strip_weights(source: Path, target: Path) -> None:
    """Write an ONNX copy whose initializers keep name, dtype and dims but hold no data."""
    import onnx

    model_file = source / "model.onnx" if source.is_dir() else source
    model = onnx.load(str(model_file), load_external_data=False)
    for tensor in model.graph.initializer:
        for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data",
                      "uint64_data", "string_data", "external_data"):  # fmt: skip
            tensor.ClearField(field)
        tensor.data_location = onnx.TensorProto.DEFAULT
    onnx.save(model, str(target))


def _link_or_copy(source: Path, target: Path) -> None:
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another file system, or links not allowed
            shutil.copy2(src, dst)

    if source.is_dir():
        shutil.copytree(source, target, copy_function=link)
    else:
        link(str(source), str(target))


_INSTANCE: ModelSaveKernel | None = None


def install(staging_dir: str | None = None, root_dir: str | None = None) -> ModelSaveKernel:
    """Register the Comm target in the running IPython kernel (idempotent; updates the folders)."""
    global _INSTANCE
    from comm import get_comm_manager
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("jupyter_modelsave.kernel.install() must run inside an IPython kernel.")
    if _INSTANCE is None:
        _INSTANCE = ModelSaveKernel(shell.user_ns, staging_dir, root_dir)
        get_comm_manager().register_target(COMM_TARGET, _on_comm_open)
    else:
        _INSTANCE.namespace = shell.user_ns
        if staging_dir:
            _INSTANCE.staging_dir = Path(staging_dir)
        if root_dir:
            _INSTANCE.root_dir = Path(root_dir).resolve()
    return _INSTANCE


def _on_comm_open(comm: Any, open_msg: dict[str, Any]) -> None:
    def on_msg(msg: dict[str, Any]) -> None:
        assert _INSTANCE is not None
        _INSTANCE.respond(msg["content"]["data"], comm.send)

    comm.on_msg(on_msg)
    comm.send({"event": "ready", "version": __version__})
