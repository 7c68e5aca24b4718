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

Robustness: a message that is not a JSON object, exceeds ``MAX_MESSAGE_BYTES``, names no known
operation, has ``args`` that are not an object, or comes out of order (write or discard of an id
that was never staged or is already discarded) gets an error reply (``InvalidOptionError``) and
changes nothing. Published exports are removed on discard, when the Comm that staged them
closes, and when the kernel process exits (``atexit``).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from ._paths import (
    INDEX_FILE,
    default_staging_dir,
    new_staging_id,
    open_private,
    private_dir,
    write_private,
)
from .core.errors import InvalidOptionError, WriteError

COMM_TARGET = "jupyter_modelsave"
# A request's data above this size (as JSON) is refused: the protocol's requests are small.
MAX_MESSAGE_BYTES = 1 << 20
# Artifacts above this size are shown in Netron from a copy without weights (shapes kept).
GRAPH_FULL_BYTES = 32 * 1024**2

Progress = Callable[[str, float], None]


def _no_progress(step: str, fraction: float) -> None:
    """Silent progress callback."""


_LIVE: weakref.WeakSet[ModelSaveKernel] = weakref.WeakSet()


@atexit.register
def _discard_all_at_exit() -> None:
    """Remove every live kernel side's published exports when the process exits."""
    for side in list(_LIVE):
        side.discard_all()


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
        _LIVE.add(self)

    OPERATIONS = ("models", "options", "stage", "write", "discard")

    def handle(self, op: str, args: dict[str, Any], progress: Progress = _no_progress) -> Any:
        """Run one operation; raises ``ModelSaveError`` for the user's mistakes."""
        if op not in self.OPERATIONS:
            raise InvalidOptionError(
                f"Unknown operation {op!r}; known: {', '.join(self.OPERATIONS)}."
            )
        if not isinstance(args, dict):
            raise InvalidOptionError(
                f"The arguments of {op!r} must be an object, not {_kind(args)}."
            )
        if op == "stage":
            return self.stage(args, progress)
        return getattr(self, op)(args)

    def respond(self, message: Any, send: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Answer one request through ``send``: progress events, then exactly one reply.

        Never raises (but for ``send`` itself): a bad message gets an error reply. Returns the reply.
        """
        rid = _request_id(message)

        def progress(step: str, fraction: float) -> None:
            send({"id": rid, "event": "progress", "step": step, "fraction": fraction})

        try:
            op, args = _parse(message)
            reply = {"ok": True, "result": self.handle(op, args, progress)}
            json.dumps(reply)  # a result the Comm cannot carry is a bug: answer it as an error
        except KeyboardInterrupt:
            reply = {"ok": False, "error": {"type": "Cancelled", "message": "Cancelled."}}
        except Exception as err:  # every failure must reach the sidebar
            reply = {"ok": False, "error": {"type": type(err).__name__, "message": str(err)}}
        reply = {"id": rid, "event": "reply", **reply}
        send(reply)
        return reply

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
        sid = new_staging_id()
        self.staged[sid] = staged
        try:
            files = publish(staged, private_dir(self.staging_dir) / sid)
        except BaseException as err:
            self.discard({"id": sid})
            if isinstance(err, OSError) and not isinstance(err, WriteError):
                raise WriteError(
                    f"The export was staged but could not be published for the browser in "
                    f"{self.staging_dir}: {err}. Free some space there or set "
                    "c.ModelSave.staging_dir."
                ) from err
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
        """Drop a staged export of this kernel: the core's work folder and the published copy.

        An id this kernel did not stage (or already discarded) is refused; nothing is touched.
        """
        sid = args.get("id")
        staged = self.staged.pop(sid, None) if isinstance(sid, str) else None
        if staged is None:
            raise InvalidOptionError(
                f"Nothing to discard: {sid!r} is not a staged export of this kernel (already "
                "discarded, or the kernel restarted)."
            )
        try:
            staged.discard()
        finally:
            shutil.rmtree(self.staging_dir / sid, ignore_errors=True)
        return {"discarded": True}

    def discard_all(self, ids: Any = None) -> None:
        """Discard every staged export (or those of ``ids`` still staged)."""
        for sid in list(self.staged if ids is None else ids):
            if sid in self.staged:
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
        from .core.example_guess import evaluate_example

        try:
            return evaluate_example(expression, self.namespace)
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


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _request_id(message: Any) -> str | int | None:
    """The request's id, echoed in the reply; None when it has none the sidebar could have sent."""
    rid = message.get("id") if isinstance(message, dict) else None
    if isinstance(rid, str) and len(rid) <= 200:
        return rid
    if isinstance(rid, int) and not isinstance(rid, bool):
        return rid
    return None


def _parse(message: Any) -> tuple[str, dict[str, Any]]:
    """``(op, args)`` of a request ``{"id", "op", "args"}``; raises ``InvalidOptionError``."""
    if not isinstance(message, dict):
        raise InvalidOptionError(
            f"A request must be an object {{id, op, args}}, not {_kind(message)}; reload the page."
        )
    try:
        size = len(json.dumps(message, allow_nan=False).encode())
    except (TypeError, ValueError) as err:
        raise InvalidOptionError(f"A request must be plain JSON: {err}.") from None
    if size > MAX_MESSAGE_BYTES:
        raise InvalidOptionError(
            f"A request of {size:,} bytes is over the limit of {MAX_MESSAGE_BYTES:,}; pass large "
            "values (example inputs) as a Python expression instead."
        )
    op = message.get("op")
    if not isinstance(op, str):
        raise InvalidOptionError(f"A request needs an operation name in 'op', got {_kind(op)}.")
    args = message.get("args")
    return op, {} if args is None else args


def _dynamic_axes(value: Any) -> Any:
    """JSON has string keys: ``{"input": {"0": "batch"}}`` -> ``{"input": {0: "batch"}}``."""
    if not isinstance(value, dict):
        return value
    return {
        tensor: {_axis(d): n for d, n in axes.items()} if isinstance(axes, dict) else axes
        for tensor, axes in value.items()
    }


def _axis(key: Any) -> Any:
    try:
        return int(key)
    except (TypeError, ValueError):
        return key


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
    """Put the staged artifact into ``folder`` (0700) with an ``index.json`` for the server.

    The index is written first (naming this process, so the server knows whose it is) and again,
    complete, last. Every file is mode 0600 from its creation (``_publish_file``). ONNX artifacts
    also get a graph for Netron: the artifact itself, or above ``GRAPH_FULL_BYTES`` (and for
    folder artifacts) a copy without weights.
    """
    os.mkdir(folder, 0o700)
    os.chmod(folder, 0o700)  # the umask may have removed bits; never adds them
    owner = {"pid": os.getpid()}
    write_private(folder / INDEX_FILE, json.dumps(owner).encode())
    artifact = f"{staged.name}{staged.path.suffix}"
    _publish_tree(staged.path, folder / artifact)
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
        **owner,
    }
    write_private(folder / INDEX_FILE, json.dumps(index).encode())
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
    with open_private(target) as f:
        f.write(model.SerializeToString())


def _publish_tree(source: Path, target: Path) -> None:
    """``_publish_file`` for a file; for a folder, its tree with folders 0700 and files 0600."""
    if not source.is_dir():
        _publish_file(source, target)
        return
    os.mkdir(target, 0o700)
    os.chmod(target, 0o700)
    for child in sorted(source.iterdir()):
        _publish_tree(child, target / child.name)


def _publish_file(source: Path, target: Path) -> None:
    """A hard link when the staged file is already private (mode 0600), else a 0600 copy.

    A link shares the file's mode, so a staged file with wider permissions is copied instead:
    the published name never refers to bytes that other users could read.
    """
    info = source.stat()
    if info.st_mode & 0o777 == 0o600:
        try:
            os.link(source, target)
            return
        except OSError:  # another file system, or links not allowed
            pass
    with open(source, "rb") as src, open_private(target) as dst:
        _copy_bytes(src, dst, info.st_size)


def _copy_bytes(src: Any, dst: Any, size: int) -> None:
    """Copy in the kernel where the OS can (``copy_file_range``: no user-space buffer, a
    copy-on-write clone on file systems that have them), else through a buffer."""
    copied = 0
    if hasattr(os, "copy_file_range"):
        try:
            while copied < size:
                step = os.copy_file_range(src.fileno(), dst.fileno(), size - copied)
                if step == 0:
                    break
                copied += step
        except OSError:  # not supported between these files: fall back from where it stopped
            pass
    src.seek(copied)
    dst.seek(copied)
    shutil.copyfileobj(src, dst, 1 << 20)


_INSTANCE: ModelSaveKernel | None = None


def install(staging_dir: str | None = None, root_dir: str | None = None) -> ModelSaveKernel:
    """Register the Comm target in the running IPython kernel (idempotent; updates the folders)."""
    global _INSTANCE
    from comm import get_comm_manager
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("jupyter_modelsave.kernel.install() must run inside an IPython kernel.")
    _record_calls()
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


def _record_calls() -> None:
    """From the sidebar's first connection on, every model's last call is recorded, so a model
    run before the sidebar was opened is listed with its inputs at the next call."""
    from .core.discovery import start_recording

    start_recording()


def _on_comm_open(comm: Any, open_msg: dict[str, Any]) -> None:
    """Answer the Comm's requests; when it closes, discard the exports it staged."""
    staged_here: set[str] = set()

    def on_msg(msg: dict[str, Any]) -> None:
        assert _INSTANCE is not None
        content = msg.get("content") if isinstance(msg, dict) else None
        data = content.get("data") if isinstance(content, dict) else None
        reply = _INSTANCE.respond(data, comm.send)
        if reply["ok"] and data["op"] == "stage":
            staged_here.add(reply["result"]["id"])

    def on_close(msg: dict[str, Any]) -> None:
        if _INSTANCE is not None:
            _INSTANCE.discard_all(staged_here)

    comm.on_msg(on_msg)
    comm.on_close(on_close)
    comm.send({"event": "ready", "version": __version__})
