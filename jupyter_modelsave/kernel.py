"""The kernel side of the JupyterLab sidebar: a Comm target with a small request/response protocol.

The sidebar installs it with a silent, history-free execute of
``import jupyter_modelsave.kernel as _jms_kernel; _jms_kernel.install(...)`` and then opens a
Comm on ``COMM_TARGET``. The operations (``protocol.Op``), their fields and JSON types are
defined once in ``protocol.py`` (mirrored by ``src/protocol.ts``). Every step is the core's,
through the service the widget uses too (``service.py``); this module checks the JSON, answers
it, and publishes staged files for the server extension (``_paths``).

Robustness: a message that is not a JSON object, exceeds ``MAX_MESSAGE_BYTES``, is nested deeper
than ``MAX_DEPTH``, names no known operation, has ``args`` that are not an object, has a field
the operation does not take or a value of another JSON type than ``protocol.FIELDS`` says (flags
are JSON booleans: ``"false"`` is refused, never read as true), or comes out of order (an id
never staged or already discarded) gets an error reply (``InvalidOptionError``) and changes
nothing. Whatever a step raises (the example expression's ``SystemExit`` or any
``BaseException`` included), the request gets exactly one reply; a staging runs on the kernel's
main thread, so the sidebar cancels it by interrupting the kernel (``KeyboardInterrupt``,
answered as ``Cancelled``). Every message sent is plain JSON that jupyter_client's packer takes
as is (``_request_id``, ``_text``). Published exports are removed on discard, when the Comm that
staged them closes, and when the kernel process exits (``atexit``).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._paths import (
    INDEX_FILE,
    default_staging_dir,
    mkdir_private,
    new_staging_id,
    private_dir,
    publish_tree,
    write_private,
)
from .core.errors import InvalidOptionError, WriteError, shown
from .core.job import Progress
from .core.version import __version__
from .protocol import COMM_TARGET, FIELDS, OPERATIONS, OPTIONAL_NOT_NULL
from .service import ModelSaveService

# A request's data above this size (as JSON) is refused: the protocol's requests are small.
MAX_MESSAGE_BYTES = 1 << 20
# A request nested deeper than this is refused (the deepest valid one, dynamic_axes, has 4 levels).
MAX_DEPTH = 32
# An error message longer than this is cut (a value quoted in it may be long).
MAX_ERROR_CHARS = 2000
# The integers a JavaScript number holds exactly; ids and numbers beyond them are refused.
SAFE_INTEGER = 2**53 - 1
# Artifacts above this size are shown in Netron from a copy without weights (shapes kept).
GRAPH_FULL_BYTES = 32 * 1024**2

_AXIS_KEY = re.compile(r"-?[0-9]{1,4}")  # a dim as JSON object keys carry it: "0", "-1"

_LIVE: weakref.WeakSet[ModelSaveKernel] = weakref.WeakSet()


@atexit.register
def _discard_all_at_exit() -> None:
    """Remove every live kernel side's published exports when the process exits."""
    for side in list(_LIVE):
        side.discard_all()


class ModelSaveKernel:
    """The operations the sidebar asks for, on one namespace (IPython's ``user_ns`` in a kernel)."""

    OPERATIONS = tuple(OPERATIONS)

    def __init__(
        self,
        namespace: dict[str, Any],
        staging_dir: str | Path | None = None,
        root_dir: str | Path | None = None,
    ) -> None:
        self.service = ModelSaveService(namespace)
        self.staging_dir = Path(staging_dir) if staging_dir else default_staging_dir()
        self.root_dir = Path(root_dir or os.getcwd()).resolve()
        self.staged: dict[str, Any] = {}  # staging id -> StagedExport
        _LIVE.add(self)

    @property
    def namespace(self) -> dict[str, Any]:
        return self.service.namespace

    def handle(self, op: str, args: dict[str, Any], progress: Progress | None = None) -> Any:
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
        """Answer one request through ``send``: progress events, then exactly one reply (returned).
        Never raises (but for ``send`` itself): a bad message gets an error reply."""
        rid = _request_id(message)

        def progress(step: str, fraction: float) -> None:
            send({"id": rid, "event": "progress", "step": step, "fraction": fraction})

        try:
            op, args = _parse(message)
            reply = {"ok": True, "result": self.handle(op, args, progress)}
            _wire(reply)  # a result the Comm cannot carry is a bug: answer it as an error
        except KeyboardInterrupt:
            reply = {"ok": False, "error": {"type": "Cancelled", "message": "Cancelled."}}
        except BaseException as err:  # every failure, SystemExit too, gets a reply
            reply = {"ok": False, "error": {"type": type(err).__name__, "message": _text(err)}}
        reply = {"id": rid, "event": "reply", **reply}
        send(reply)
        return reply

    # --- operations ---

    def models(self, args: dict[str, Any]) -> dict[str, Any]:
        """The namespace's models, with the rows of their dynamic-axes editors."""
        check_fields("models", args)
        return dict(self.service.models())

    def options(self, args: dict[str, Any]) -> dict[str, Any]:
        """The frameworks, each format's capabilities, the default tolerances."""
        check_fields("options", args)
        return dict(self.service.options())

    def stage(self, args: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
        """Stage the named model (``service.stage``), publish it for the server, summarise it."""
        staged = self.service.stage(check_fields("stage", args), progress)  # type: ignore[arg-type]
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

    def diff(self, args: dict[str, Any]) -> dict[str, Any]:
        """``StagedExport.diff`` against a folder below the server's root (``{"diff": null}`` when
        it holds no artifact of that name); paths relative to the root."""
        _, staged, folder = self._target("diff", args)
        found = staged.diff(folder)
        if found is None:
            return {"diff": None}
        from .core.parity import _json_safe

        path = Path(found["previous_path"])  # in `folder`, resolved inside the root
        relative = path.relative_to(self.root_dir).as_posix()
        return {"diff": _json_safe({**found, "previous_path": relative})}

    def write(self, args: dict[str, Any]) -> dict[str, Any]:
        """``StagedExport.write`` into a folder below the server's root; return root-relative paths."""
        args, staged, folder = self._target("write", args)
        path = staged.write(
            f"{folder}{os.sep}",
            name=args.get("name") or None,
            version=args.get("version") or None,
            overwrite=args.get("overwrite", False),
            allow_mismatch=args.get("allow_mismatch", False),
        )
        relative = Path(path).resolve().relative_to(self.root_dir).as_posix()
        return {"path": relative, "manifest": f"{relative}.json"}

    def discard(self, args: dict[str, Any]) -> dict[str, Any]:
        """Drop a staged export of this kernel: the core's work folder and the published copy. An
        id this kernel did not stage (or already discarded) is refused; nothing is touched."""
        sid = check_fields("discard", args)["id"]
        staged = self.staged.pop(sid, None)
        if staged is None:
            raise InvalidOptionError(
                f"Nothing to discard: {shown(sid)} is not a staged export of this kernel (already "
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

    def _target(self, op: str, args: dict[str, Any]) -> tuple[dict[str, Any], Any, Path]:
        """The checked arguments of ``diff`` or ``write``, their staged export, their folder."""
        args = check_fields(op, args)
        staged = self.staged.get(args["id"])
        if staged is None:
            raise InvalidOptionError(
                "This staged export is gone (discarded, or the kernel restarted); stage it again."
            )
        return args, staged, self._inside_root(args.get("folder") or "")

    def _inside_root(self, folder: str) -> Path:
        """An existing-or-new folder inside the server's root; refuses absolute paths and ``..``,
        NUL bytes, backslashes and names the file system cannot hold."""
        if Path(folder).is_absolute():
            raise InvalidOptionError(
                f"Folder {shown(folder)} must be relative to the Jupyter root, e.g. 'exports'."
            )
        if "\x00" in folder or "\\" in folder:
            raise InvalidOptionError(
                f"Folder {shown(folder)} is refused: NUL bytes and backslashes are not allowed; "
                "separate folders with '/'."
            )
        try:
            target = (self.root_dir / folder).resolve()
        except (OSError, ValueError, RuntimeError) as err:  # too long, unencodable, a link loop
            raise InvalidOptionError(f"Folder {shown(folder)} cannot be used: {err}.") from None
        if not target.is_relative_to(self.root_dir):
            raise InvalidOptionError(f"Folder {shown(folder)} is outside the Jupyter root.")
        return target


def _request_id(message: Any) -> str | int | None:
    """The request's id, echoed in the reply; None unless the sidebar could have sent it (a
    string of at most 200 ASCII characters, or an integer within JavaScript's safe range)."""
    rid = message.get("id") if isinstance(message, dict) else None
    text = isinstance(rid, str) and len(rid) <= 200 and rid.isascii()
    return rid if text or _is_json("integer", rid) else None


def _parse(message: Any) -> tuple[str, dict[str, Any]]:
    """``(op, args)`` of a request ``{"id", "op", "args"}``; raises ``InvalidOptionError``."""
    if not isinstance(message, dict):
        raise InvalidOptionError(
            f"A request must be an object {{id, op, args}}, not {_kind(message)}; reload the page."
        )
    if _deeper_than(message, MAX_DEPTH):
        raise InvalidOptionError(
            f"A request nested more than {MAX_DEPTH} levels deep is refused; the protocol's "
            "requests are flat."
        )
    try:
        size = len(json.dumps(message, allow_nan=False).encode())
    except (TypeError, ValueError) as err:
        raise InvalidOptionError(f"A request must be plain JSON: {_text(err)}.") from None
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


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether lists/dicts in ``value`` nest more than ``limit`` levels (without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def check_fields(op: str, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` checked against ``protocol.FIELDS[op]``, nulls of optional fields dropped and
    ``dynamic_axes`` with integer dims (JSON object keys are strings); ``InvalidOptionError``
    names the first field that is unknown, missing or of another JSON type."""
    fields = FIELDS[op]
    unknown = sorted(set(args) - set(fields), key=str)
    if unknown:
        raise InvalidOptionError(
            f"{op!r} takes no field {shown(unknown[0])}; its fields: {', '.join(fields) or 'none'}."
        )
    checked = {}
    for field, kind in fields.items():
        optional = kind.endswith("?")
        kind = kind.rstrip("?")
        value = args.get(field)
        if field not in args or (value is None and optional):
            if not (optional or field in OPTIONAL_NOT_NULL):
                raise InvalidOptionError(f"{op!r} needs the field {field!r} ({kind}).")
            continue
        if kind == "dynamic axes":
            value = _dynamic_axes(value)
        elif not _is_json(kind, value):
            raise _wrong_type(op, field, kind, value)
        checked[field] = value
    return checked


def _is_json(kind: str, value: Any) -> bool:
    """Whether ``value`` is of JSON type ``kind`` (numbers within JavaScript's safe range)."""
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str) and _encodable(value)
    if type(value) is int:
        return kind in ("integer", "number") and abs(value) <= SAFE_INTEGER
    return kind == "number" and type(value) is float


def _wrong_type(op: str, field: str, kind: str, value: Any) -> InvalidOptionError:
    expected = {"boolean": "true or false", "integer": "an integer", "number": "a number"}
    if kind == "string" and isinstance(value, str):
        return InvalidOptionError(f"{op}: {field!r} is not valid text (a lone surrogate).")
    if kind in ("integer", "number") and type(value) is int:
        return InvalidOptionError(
            f"{op}: {field!r} must be {expected[kind]} within ±{SAFE_INTEGER:,}, got "
            f"{shown(value)}."
        )
    return InvalidOptionError(
        f"{op}: {field!r} must be {expected.get(kind, 'a string')}, got {_kind(value)} "
        f"{shown(value)}."
    )


def _dynamic_axes(value: Any) -> dict[str, Any]:
    """``{"input": {"0": "batch"}}`` -> ``{"input": {0: "batch"}}``; ``{"input": [0]}`` kept.
    The tensor names and axis names are strings, the dims decimal integers (``"-1"`` too)."""
    example = '{"input": {"0": "batch"}} or {"input": [0]}'
    if not isinstance(value, dict):
        raise InvalidOptionError(f"stage: 'dynamic_axes' must be an object like {example}.")
    result: dict[str, Any] = {}
    for tensor, axes in value.items():
        where = f"stage: 'dynamic_axes' of {shown(tensor)}"
        if not _encodable(tensor):
            raise InvalidOptionError(f"{where}: the name is not valid text.")
        if isinstance(axes, list):
            if not all(_is_json("integer", dim) for dim in axes):
                raise InvalidOptionError(f"{where} must list integer dims, got {shown(axes)}.")
            result[tensor] = axes
        elif isinstance(axes, dict):
            for dim, name in axes.items():
                if not _AXIS_KEY.fullmatch(dim):
                    raise InvalidOptionError(f"{where}: dim {shown(dim)} is not an integer.")
                if not isinstance(name, str) or not _encodable(name):
                    raise InvalidOptionError(
                        f"{where}: the axis name of dim {dim} must be a string, got {shown(name)}."
                    )
            result[tensor] = {int(dim): name for dim, name in axes.items()}
        else:
            raise InvalidOptionError(f"{where} must be an object or a list, as in {example}.")
    return result


def _encodable(text: str) -> bool:
    """Whether ``text`` is valid Unicode (no lone surrogate), so files and the wire can hold it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "an object", type(None): "null"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _text(err: BaseException) -> str:
    """An error's message as the wire carries it: valid UTF-8, at most ``MAX_ERROR_CHARS`` (the
    middle cut out)."""
    try:
        text = str(err) or type(err).__name__
    except Exception:  # a message that cannot be made (a huge int in it)
        text = type(err).__name__
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= MAX_ERROR_CHARS:
        return text
    half = (MAX_ERROR_CHARS - 5) // 2  # keep both ends: a long value is quoted in the middle
    return f"{text[:half]} ... {text[-half:]}"


def _wire(message: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless the Comm carries ``message`` as plain JSON (as jupyter_client's
    packer does: no NaN, valid UTF-8)."""
    json.dumps(message, allow_nan=False, ensure_ascii=False).encode("utf-8")


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
        "precision": staged.precision,
        "variant": staged.variant,
        "latency": staged.latency,
        "inputs": [s.to_dict() for s in staged.input_specs],
        "outputs": [s.to_dict() for s in staged.output_specs],
    }


def publish(staged: Any, folder: Path) -> dict[str, Any]:
    """Put the staged artifact into ``folder`` (0700) with an ``index.json`` for the server.

    The index is written first (naming this process, so the server knows whose it is) and again,
    complete, last. Every file is mode 0600 from its creation (``_paths.publish_tree``). A format
    whose graph Netron shows (``Capabilities.graph_view``) also gets a graph for it: the artifact
    itself, or above ``GRAPH_FULL_BYTES`` (and for folder artifacts) a copy without weights.
    """
    from .core.formats import get_format

    mkdir_private(folder)
    owner = {"pid": os.getpid()}
    write_private(folder / INDEX_FILE, json.dumps(owner).encode())
    artifact = f"{staged.name}{staged.path.suffix}"
    publish_tree(staged.path, folder / artifact)
    fmt = get_format(staged.format, staged.framework)
    graph = None
    if fmt.capabilities.graph_view:
        graph = artifact
        if staged.path.is_dir() or staged.size_bytes > GRAPH_FULL_BYTES:
            graph = f"{staged.name}.graph{fmt.extension}"
            write_private(folder / graph, fmt.graph_view(staged.path))
    index = {
        "artifact": artifact,
        "graph": graph,
        "sha256": staged.sha256,
        "size_bytes": staged.size_bytes,
        **owner,
    }
    write_private(folder / INDEX_FILE, json.dumps(index).encode())
    return {"file": artifact, "graph": graph, "folder_artifact": staged.path.is_dir()}


_INSTANCE: ModelSaveKernel | None = None


def install(staging_dir: str | None = None, root_dir: str | None = None) -> ModelSaveKernel:
    """Register the Comm target in the running IPython kernel (idempotent; updates the folders)."""
    global _INSTANCE
    from comm import get_comm_manager
    from IPython import get_ipython

    from .core.discovery import start_recording

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("jupyter_modelsave.kernel.install() must run inside an IPython kernel.")
    # from the sidebar's first connection on, every model's last call is recorded, so a model
    # run before the sidebar was opened is listed with its inputs at the next call
    start_recording()
    if _INSTANCE is None:
        _INSTANCE = ModelSaveKernel(shell.user_ns)
        get_comm_manager().register_target(COMM_TARGET, _on_comm_open)
    _INSTANCE.service.namespace = shell.user_ns
    if staging_dir:
        _INSTANCE.staging_dir = Path(staging_dir)
    if root_dir:
        _INSTANCE.root_dir = Path(root_dir).resolve()
    return _INSTANCE


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
