"""The Jupyter server extension: HTTP handlers under ``<base_url>/modelsave/``.

The server handles files only; the model lives in the kernel (``kernel.py``). Routes: ``health``
and ``config`` (the folders the sidebar passes to the kernel side); ``netron/``, Netron's viewer
from the installed ``netron`` package, patched and confined to this server (``_netron``);
``staged/<id>/artifact|graph``, a staged export's bytes by its opaque id, from the staging folder
only (``_paths``); ``download/<path>``, below the root only an artifact jupyter_modelsave wrote or
its manifest, hidden paths only with ``ContentsManager.allow_hidden`` (``_served``).

Files are streamed by tornado's ``StaticFileHandler`` (chunks, ``Content-Length``, ``Range`` ->
206) with ``Content-Disposition`` and ``X-Content-SHA256`` added. A folder artifact (ONNX with
external data, sharded safetensors, a SavedModel) is streamed as one uncompressed zip,
``<folder>.zip``, built while it is sent (no copy on disk, no ``Range``, no sha256 header: the
manifest's sha256 covers the folder's files); any other folder is refused. Every verb is
``@tornado.web.authenticated`` (``scripts/check_auth.py`` fails the test command otherwise) and
every verb, implemented or not, answers 403 without credentials (``CredentialsRequired``; no
redirect to the login page, pages included); every error is JSON (``http_error`` maps them);
paths are resolved (symlinks too) and refused when they leave their folder. No route changes
state: POST/PUT/PATCH/DELETE answer 403 without an XSRF token and 405 with one. On start the
server makes the staging folder private (0700, this user's) and removes the exports of kernels
that are gone (``_paths.remove_stale``).
"""

from __future__ import annotations

import asyncio
import json
import zipfile
import zlib
from functools import cache
from pathlib import Path
from typing import Any

import tornado
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web
from traitlets import Bool, Unicode, default
from traitlets.config import Configurable
from traitlets.log import get_logger

from ._netron import check_page_arguments, csp, netron_dir, netron_index
from ._paths import STAGING_ID, default_staging_dir, private_dir, read_index, remove_stale
from ._served import OutsideError, inside, written_artifact
from .core.errors import IntegrityError, InvalidOptionError, ModelSaveError
from .core.hashing import sha256_file
from .core.version import __version__

NAMESPACE = "modelsave"
SETTINGS_KEY = "jupyter_modelsave"
SHA256_HEADER = "X-Content-SHA256"
NETRON_ASSET = r"[\w.-]+\.(?:js|json|css|png|ico)"


class ModelSave(Configurable):
    """The server extension's state; configure it as ``c.ModelSave.staging_dir = ...``."""

    staging_dir = Unicode(
        help="Folder where kernels publish staged exports for the browser (Netron, downloads). "
        "The sidebar passes it to the kernel side; default <tempdir>/jupyter_modelsave-<user>/staging. "
        "It must belong to the server's user (it is made mode 0700). On start the server removes "
        "the exports of kernels whose process is gone."
    ).tag(config=True)
    root_dir = Unicode(
        help="The Jupyter server's root; written artifacts are served from below it."
    )
    compress_downloads = Bool(
        True,
        help="Send artifacts gzip-compressed to browsers that accept it, when a sample of the file "
        "shrinks by 10 % or more (bf16/fp16 weights do, random fp32 barely). Turn it off when the "
        "network is faster than one CPU core compresses (zlib level 1).",
    ).tag(config=True)

    @default("staging_dir")
    def _default_staging_dir(self) -> str:
        return str(default_staging_dir())

    def staged_file(self, sid: str, which: str) -> Path:
        """The staged artifact (``which="artifact"``) or its graph view, by staging id."""
        if not STAGING_ID.match(sid):
            raise InvalidOptionError(f"{sid!r} is not a staging id.")
        folder = Path(self.staging_dir) / sid
        index = None if folder.is_symlink() else read_index(folder)
        if index is None:
            raise FileNotFoundError(
                "No such staged export (discarded, or its kernel stopped); stage it again."
            )
        name = index.get(which)
        if not isinstance(name, str):
            raise FileNotFoundError(f"This staged export has no {which} file.")
        return inside(folder, name, folders=which == "artifact")

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def zip_members(folder: Path) -> list[tuple[str, Path]]:
    """The regular files below ``folder`` as (name in the zip, path), sorted; any symlink or
    special file in it refuses the whole folder."""
    members = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            raise OutsideError(f"{path.name!r} in {folder.name!r} is a link or a special file.")
        if path.is_file():
            members.append((path.relative_to(folder).as_posix(), path))
    return members


class _Chunks:
    """A write-only stream that keeps what ``zipfile`` writes until the handler sends it."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


# --- compressed transfer ---

GZIP_LEVEL = 1  # zlib's fastest level: bf16/fp16 weights lose most of what they can at 1
GZIP_CHUNK = 1 << 20
GZIP_MIN_BYTES = 64 * 1024  # smaller files: nothing worth the header and the CPU
GZIP_MAX_RATIO = 0.9  # compress only when the sample shrinks to at most 90 %
_SAMPLES, _SAMPLE_BYTES = 4, 256 * 1024


def accepts_gzip(headers: Any) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (``gzip;q=0`` refuses it)."""
    for item in headers.get("Accept-Encoding", "").split(","):
        token, _, params = item.strip().partition(";")
        if token.strip().lower() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=").strip()
            try:
                return quality == "" or float(quality) > 0
            except ValueError:
                return False
    return False


@cache
def compressible(path: str, size: int, mtime_ns: int) -> bool:
    """Whether gzip shrinks this file enough, judged on a few samples spread over it (cached per
    file version). Weights in bf16/fp16 shrink (their exponent bytes repeat); random fp32 and
    already-compressed files barely do, and are sent as they are."""
    if size < GZIP_MIN_BYTES:
        return False
    step = max(size // _SAMPLES, _SAMPLE_BYTES)
    raw = packed = 0
    with open(path, "rb") as source:
        for offset in range(0, size, step):
            source.seek(offset)
            block = source.read(_SAMPLE_BYTES)
            raw += len(block)
            packed += len(zlib.compress(block, GZIP_LEVEL))
    return packed <= GZIP_MAX_RATIO * raw


@cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, cached per (path, size, mtime) so a resumed download does not re-hash."""
    return sha256_file(Path(path))


def http_error(err: Exception) -> web.HTTPError:
    """The one mapping from errors to JSON HTTP errors (``APIHandler.write_error`` renders it)."""
    statuses = (
        (FileNotFoundError, 404),
        (PermissionError, 403),
        ((IsADirectoryError, InvalidOptionError), 400),
        (IntegrityError, 409),
    )
    status = next((code for kinds, code in statuses if isinstance(err, kinds)), 500)
    return web.HTTPError(status, str(err), reason=type(err).__name__)


def service(handler: JupyterHandler) -> ModelSave:
    return handler.settings[SETTINGS_KEY]


class CredentialsRequired:
    """Refuse every request without credentials with 403, whatever its verb.

    Jupyter checks credentials only in the verbs decorated ``@authenticated`` unless
    ``allow_unauthenticated_access`` is False; a verb a handler does not implement would answer
    405 and ``OPTIONS`` (CORS preflight) 200. ``prepare`` runs before any verb, so here every verb
    of every route answers 403 without credentials, on any server setting. ``OPTIONS`` with
    credentials behaves as Jupyter's: these routes are same-origin only, so no preflight is
    needed. Pages answer 403 too, not a redirect to the login page: the Netron pages load inside
    the sidebar's iframe, where a login page is of no use.
    """

    async def prepare(self) -> None:
        await super().prepare()  # type: ignore[misc]
        if not self.current_user:  # type: ignore[attr-defined]
            raise web.HTTPError(403)

    def get_login_url(self) -> str:
        if not self.current_user:  # type: ignore[attr-defined]
            raise web.HTTPError(403)
        return super().get_login_url()  # type: ignore[misc]

    @tornado.web.authenticated
    def options(self, *args: str) -> Any:
        return super().options(*args)  # type: ignore[misc]

    @tornado.web.authenticated
    def head(self, *args: str) -> Any:
        """The ``get`` of a page or an API; tornado sends the headers only."""
        return self.get(*args)  # type: ignore[attr-defined]


class HealthHandler(CredentialsRequired, APIHandler):
    """``GET /modelsave/health``: the package version, so the sidebar can check the server side."""

    @tornado.web.authenticated
    def get(self) -> None:
        self.finish(json.dumps({"status": "ok", "version": __version__}))


class ConfigHandler(CredentialsRequired, APIHandler):
    """``GET /modelsave/config``: the folders the sidebar passes to the kernel side."""

    @tornado.web.authenticated
    def get(self) -> None:
        state = service(self)
        self.finish(json.dumps({"staging_dir": state.staging_dir, "root_dir": state.root_dir}))


class _FileHandler(CredentialsRequired, APIHandler, web.StaticFileHandler):
    """Streams one resolved file with Range support, a sha256 header and JSON errors."""

    disposition = "attachment"

    def initialize(self) -> None:
        web.StaticFileHandler.initialize(self, path="/")
        self.file: Path | None = None

    def resolve(self, *args: str) -> Path:
        raise NotImplementedError

    @tornado.web.authenticated
    async def get(self, *args: str) -> None:  # type: ignore[override]
        await self._send(*args)

    @tornado.web.authenticated
    async def head(self, *args: str) -> None:  # type: ignore[override]
        await self._send(*args, include_body=False)

    async def _send(self, *args: str, include_body: bool = True) -> None:
        try:
            self.file = self.resolve(*args)
        except (OSError, ModelSaveError) as err:
            raise http_error(err) from None
        if self.file.is_dir():
            await self._send_zip(self.file, include_body)
        elif self._gzip_helps():
            await self._send_gzip(self.file, include_body)
        else:
            self.root = str(self.file.parent)
            await web.StaticFileHandler.get(self, self.file.name, include_body=include_body)

    def _gzip_helps(self) -> bool:
        """Send gzip when the browser accepts it, no Range was asked for (a resume gets the file's
        own bytes, 206) and a sample of the file compresses (``compressible``)."""
        headers = self.request.headers
        if not service(self).compress_downloads or "Range" in headers or not accepts_gzip(headers):
            return False
        assert self.file is not None
        stat = self.file.stat()
        return compressible(str(self.file), stat.st_size, stat.st_mtime_ns)

    async def _send_gzip(self, path: Path, include_body: bool) -> None:
        """Stream ``path`` gzip-encoded (``Content-Encoding: gzip``, no ``Content-Length``: it is
        compressed while it is sent, in a worker thread so the server keeps answering)."""
        self.set_header("Content-Type", self.get_content_type())
        self.set_header("Content-Encoding", "gzip")
        self.set_header("Vary", "Accept-Encoding")
        self.set_extra_headers(path.name)
        if not include_body:
            self.finish()
            return
        loop = asyncio.get_running_loop()
        packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        with open(path, "rb") as source:
            while block := await loop.run_in_executor(None, source.read, GZIP_CHUNK):
                # deflate may hold bytes back (an empty chunk) until the next block or the flush
                if chunk := await loop.run_in_executor(None, packer.compress, block):
                    self.write(chunk)
                    await self.flush()
        self.finish(await loop.run_in_executor(None, packer.flush))

    async def _send_zip(self, folder: Path, include_body: bool) -> None:
        """Stream ``folder`` as an uncompressed zip, one chunk of a file at a time."""
        try:
            members = zip_members(folder)
        except OSError as err:
            raise http_error(err) from None
        self.set_header("Content-Type", "application/zip")
        self.set_attachment_header(f"{folder.name}.zip")
        self.set_header("Cache-Control", "no-cache")
        if not include_body:
            self.finish()
            return
        sink = _Chunks()
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, path in members:
                with open(path, "rb") as source, archive.open(name, "w", force_zip64=True) as out:
                    while block := source.read(1 << 20):
                        out.write(block)
                        self.write(sink.take())
                        await self.flush()
        self.finish(sink.take())

    def set_extra_headers(self, path: str) -> None:
        assert self.file is not None
        if self.disposition == "attachment":
            self.set_attachment_header(self.file.name)
        else:
            self.set_header("Content-Disposition", "inline")
        self.set_header(SHA256_HEADER, service(self).sha256(self.file))
        self.set_header("Cache-Control", "no-cache")

    def get_content_type(self) -> str:
        return "application/octet-stream"

    def compute_etag(self) -> str | None:
        return None  # the default reads the whole file for an md5

    def finish(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("set_content_type", self._headers.get("Content-Type", "application/json"))
        return super().finish(*args, **kwargs)


class StagedHandler(_FileHandler):
    """``GET /modelsave/staged/<id>/artifact`` (download) or ``.../graph`` (Netron's view)."""

    def resolve(self, sid: str, which: str) -> Path:  # type: ignore[override]
        self.disposition = "attachment" if which == "artifact" else "inline"
        return service(self).staged_file(sid, which)


class DownloadHandler(_FileHandler):
    """``GET /modelsave/download/<path>``: a written artifact below the server's root."""

    def resolve(self, relative: str) -> Path:  # type: ignore[override]
        state, allow_hidden = service(self), bool(self.contents_manager.allow_hidden)
        return written_artifact(
            state.root_dir, relative, allow_hidden=allow_hidden, sha256=state.sha256
        )


# --- Netron ---


class _NetronPolicy:
    """The viewer's Content-Security-Policy (``_netron.csp``) instead of Jupyter's default."""

    @property
    def content_security_policy(self) -> str:
        return csp()


class NetronPageHandler(CredentialsRequired, _NetronPolicy, JupyterHandler):
    """``GET /modelsave/netron/``: the patched viewer page (a same-origin page, so cookies work).
    A ``?url=`` that is not one of this server's graphs, or a ``?gist=``, is refused (400)."""

    @tornado.web.authenticated
    def get(self) -> None:
        try:
            check_page_arguments(
                self.request.arguments,
                base_url=self.base_url,
                host=self.request.host,
                scheme=self.request.protocol,
            )
        except InvalidOptionError as err:
            raise http_error(err) from None
        path = url_path_join(self.base_url, NAMESPACE, "netron/")
        self.set_cookie("consent", "jupyter_modelsave", path=path, samesite="Strict")
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(netron_index())


class NetronAssetHandler(CredentialsRequired, _NetronPolicy, JupyterHandler, web.StaticFileHandler):
    """``GET /modelsave/netron/<asset>``: the viewer's scripts, styles and metadata (no ``.py``)."""

    @tornado.web.authenticated
    def get(self, path: str, include_body: bool = True) -> Any:  # type: ignore[override]
        return web.StaticFileHandler.get(self, path, include_body=include_body)

    @tornado.web.authenticated
    def head(self, path: str) -> Any:  # type: ignore[override]
        return web.StaticFileHandler.get(self, path, include_body=False)


def setup_route_handlers(web_app: Any) -> None:
    """Create the ``ModelSave`` service in ``web_app.settings`` and add the routes."""
    state = ModelSave(config=web_app.settings.get("config"))
    state.root_dir = str(web_app.settings.get("server_root_dir") or ".")
    web_app.settings[SETTINGS_KEY] = state
    try:  # make the staging folder private, remove the exports of kernels that are gone
        private_dir(state.staging_dir)
        removed = remove_stale(state.staging_dir)
    except OSError as err:  # StagingFolderError too; the kernel side reports it when it stages
        get_logger().warning("jupyter_modelsave: staging folder unusable: %s", err)
    else:
        if removed:
            get_logger().info("jupyter_modelsave: removed %d stale staged exports", len(removed))

    def url(*parts: str) -> str:
        return url_path_join(web_app.settings["base_url"], NAMESPACE, *parts)

    handlers = [
        (url("health"), HealthHandler),
        (url("config"), ConfigHandler),
        (url("netron/"), NetronPageHandler),
        (url("netron/index.html"), NetronPageHandler),
        (url("netron", f"({NETRON_ASSET})"), NetronAssetHandler, {"path": str(netron_dir())}),
        (url("staged", f"({STAGING_ID.pattern[1:-1]})", "(artifact|graph)"), StagedHandler),
        (url("download", "(.+)"), DownloadHandler),
    ]
    web_app.add_handlers(".*$", handlers)
