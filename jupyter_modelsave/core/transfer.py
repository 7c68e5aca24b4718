"""An artifact as one text string, for pasting or sending where files cannot go.

The string is ``jms1:<format>:<layout>:<sha256>[:<signature>]:<base64 payload>``: the payload is
the artifact's bytes (``layout`` ``file``), or a zip of a folder artifact (``layout`` ``zip``); the
sha256 is the payload's, so a changed or truncated string is detected on decode
(``IntegrityError``). ``to_base64`` adds the signature (64 hex digits: this user's HMAC of the
sha256 and format, see ``trust.py``), so ``from_base64`` trusts the strings you made yourself;
anyone else's string, signed or not, loads as untrusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from . import trust
from .errors import IntegrityError, ParityError
from .formats import get_format

if TYPE_CHECKING:
    import torch

PREFIX = "jms1"
_TEXT = re.compile(
    r"^jms1:(?P<format>\w+):(?P<layout>file|zip):(?P<sha>[0-9a-f]{64})"
    r"(?::(?P<signature>[0-9a-f]{64}))?:(?P<data>[^:]*)$",
    re.S | re.ASCII,
)


def to_base64(model: Any, format: str = "onnx", example_inputs: Any = None, **options: Any) -> str:  # fmt: skip
    """Stage ``model`` (``jms.stage`` options), check parity, and return the artifact as a string.

    Raises ``ParityError`` when parity fails (pass ``allow_mismatch=True`` to encode it anyway).
    """
    from .staging import stage

    allow_mismatch = options.pop("allow_mismatch", False)
    staged = stage(model, example_inputs, format=format, **options)
    try:
        if staged.report is not None and not staged.report.passed and not allow_mismatch:
            raise ParityError(
                f"Not encoded: {staged.report.summary()}. Pass allow_mismatch=True to encode it anyway.",
                staged.report,
            )
        return encode(staged.path, staged.format, signed=True)
    finally:
        staged.discard()


def from_base64(text: str, *, map_location: str | torch.device = "cpu", trusted: bool = False) -> Any:  # fmt: skip
    """The loaded object of a ``to_base64`` string (as ``jms.load`` returns it), after its sha256 check.

    A string you made with ``to_base64`` (signed with your key) is trusted as it is; any other is
    loaded as untrusted unless ``trusted=True`` (see ``jms.load``).
    """
    from .load_checks import check_map_location, readable
    from .options import check_flag

    trusted = check_flag("trusted", trusted)
    string = decode(text)
    fmt = get_format(string.format)
    signature = f"{trust.SCHEME}:{string.signature}" if string.signature else None
    trusted = trusted or trust.is_signed(string.sha256, fmt.name, signature)
    device = check_map_location(map_location)
    with tempfile.TemporaryDirectory(prefix="jms-base64-") as tmp:
        path = Path(tmp) / f"artifact{fmt.extension}"
        if string.layout == "zip":
            _unzip(string.payload, path)
        else:
            path.write_bytes(string.payload)
        return readable(
            path,
            f"a {fmt.name} artifact",
            lambda: fmt.load(path, map_location=device, trusted=trusted),
        )


def encode(path: Path, format: str, *, signed: bool = False) -> str:
    """The string for an artifact file or folder of the given format (``signed``: with this
    user's signature, for artifacts this user just made)."""
    layout, payload = ("zip", _zipped(path)) if path.is_dir() else ("file", path.read_bytes())
    sha = _sha256(payload)
    signature = trust.sign(sha, format) if signed else None
    mark = f":{signature.removeprefix(f'{trust.SCHEME}:')}" if signature else ""
    return f"{PREFIX}:{format}:{layout}:{sha}{mark}:{base64.b64encode(payload).decode()}"


class Decoded(NamedTuple):
    format: str
    layout: str  # "file" or "zip"
    payload: bytes
    sha256: str  # the payload's, checked
    signature: str | None  # hex, as the string carries it (not yet checked)


def decode(text: str) -> Decoded:
    """The parts of a string, or ``IntegrityError`` when it is not intact."""
    match = _TEXT.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise IntegrityError(
            "This is not a jupyter_modelsave string (expected 'jms1:<format>:<layout>:<sha256>:"
            "[<signature>:]<base64>'). Copy the whole string that jms.to_base64 returned."
        )
    try:
        payload = base64.b64decode(match["data"], validate=True)
    except binascii.Error as err:
        raise IntegrityError(
            f"The base64 payload is damaged ({err}); copy the string again."
        ) from None
    actual = _sha256(payload)
    if actual != match["sha"]:
        raise IntegrityError(
            f"The payload's sha256 is {actual[:12]}..., the string says {match['sha'][:12]}...: it was "
            "changed or truncated on the way. Copy the whole string again."
        )
    return Decoded(match["format"], match["layout"], payload, actual, match["signature"])


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _unzip(payload: bytes, folder: Path) -> None:
    """Extract a folder artifact's zip: stored (uncompressed) members with relative names only,
    so a crafted string can neither expand into more bytes than it carries nor write outside."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(payload))
    except (zipfile.BadZipFile, ValueError) as err:
        raise IntegrityError(f"The string's folder payload is not a zip archive ({err}).") from None
    with archive:
        for info in archive.infolist():
            name = info.filename
            parts = name.split("/")
            if (
                info.compress_type != zipfile.ZIP_STORED
                or info.file_size != info.compress_size
                or name.startswith("/")
                or any(p in ("..", ".") or "\\" in p or "\0" in p for p in parts)
            ):
                raise IntegrityError(
                    f"The string's folder payload holds {name!r}, which jms.to_base64 never "
                    "writes (compressed, or a path outside the folder). It was crafted; do not use it."
                )
        archive.extractall(folder)


def _zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(file, file.relative_to(folder).as_posix())
    return buffer.getvalue()
