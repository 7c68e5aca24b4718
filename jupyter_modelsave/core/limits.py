"""The memory bound on loading an untrusted artifact, and the checks formats share to keep it.

Loading an artifact that is not trusted (no ``trusted=True``, not signed by this user) grows the
process's peak resident memory by at most ``memory_bound(size)`` = 64 MiB + 8 x the artifact's
size in bytes (of a folder: all its files; of a base64 string: its payload), once the format's
libraries are imported. Each format keeps to it by refusing, before its library reads the file,
what would make a small file expand (``UnsafeArtifactError``; ``trusted=True`` lifts the checks):

- zip archives (``torch.save`` files) must hold their members uncompressed, as ``torch.save``,
  Keras and ``jms.to_base64`` write them: a deflated member could expand a thousandfold;
- a pickle may create only as many Python objects as the bound allows (``pickle_cost``: each
  opcode is charged what it allocates in torch's ``weights_only`` unpickler, e.g. 320 bytes for
  a one-byte ``EMPTY_SET``);
- the other formats say in their modules how they keep to it (ONNX, safetensors, ``.weights.h5``).
"""

from __future__ import annotations

import pickletools
import zipfile

from .errors import UnsafeArtifactError

BASE_BYTES = 64 * 2**20
PER_FILE_BYTE = 8
TRUST_MEMORY_HINT = "If you made this file yourself or trust its source, pass trusted=True."


def memory_bound(size: int) -> int:
    """The most an untrusted load of an artifact of ``size`` bytes may add to the peak RSS."""
    return BASE_BYTES + PER_FILE_BYTE * size


def check_stored_zip(archive: zipfile.ZipFile, label: str) -> None:
    """Every member stored uncompressed, its declared size the size it occupies in the file."""
    for info in archive.infolist():
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise UnsafeArtifactError(
                f"{label} holds the compressed member {info.filename!r} ({info.compress_size:,} "
                f"bytes that expand to {info.file_size:,}); the writers this file claims to come "
                f"from never compress, and loading it could take far more memory than its size. "
                f"{TRUST_MEMORY_HINT}"
            )


# What each opcode of torch's weights_only unpickler allocates at most, in bytes (CPython,
# 64-bit; measured and rounded up). An opcode that creates a new object is also charged
# ``_SLOT`` for the stack and container slots and the dict entry it may end up in; a reference
# to an existing object (GET, singletons) costs a slot only.
_SLOT = 104
_NEW = {
    "EMPTY_SET": 216, "EMPTY_DICT": 64, "EMPTY_LIST": 64, "DICT": 64, "LIST": 64,
    "TUPLE": 64, "TUPLE1": 64, "TUPLE2": 72, "TUPLE3": 80, "BININT": 32, "BININT1": 32,
    "BININT2": 32, "INT": 32, "LONG": 32, "LONG1": 32, "LONG4": 32, "BINFLOAT": 24, "FLOAT": 24,
    "BINUNICODE": 80, "SHORT_BINUNICODE": 80, "BINUNICODE8": 80, "UNICODE": 80,
    "SHORT_BINSTRING": 80, "BINSTRING": 80, "STRING": 80, "SHORT_BINBYTES": 48, "BINBYTES": 48,
    "BINBYTES8": 48, "BYTEARRAY8": 64,
    "REDUCE": 1024, "NEWOBJ": 1024, "NEWOBJ_EX": 1024, "OBJ": 1024, "INST": 1024,
    "BINPERSID": 1024, "PERSID": 1024, "GLOBAL": 128, "STACK_GLOBAL": 128,
}  # fmt: skip
_OTHER = {"MARK": 72, "BUILD": 512, "BINPUT": 112, "LONG_BINPUT": 112, "PUT": 112, "MEMOIZE": 112}
_REFERENCE = 16  # GET, BINGET, LONG_BINGET, DUP, NONE, NEWTRUE, NEWFALSE, EMPTY_TUPLE


_MAX_PER_BYTE = max(_NEW.values()) + _SLOT  # no opcode costs more per byte of the file


def pickle_cost(data: bytes, limit: int) -> int:
    """An upper bound of the bytes unpickling ``data`` allocates, counted until it passes
    ``limit`` (a pickle too short to pass it is not read). ``ValueError`` if malformed."""
    if len(data) * _MAX_PER_BYTE <= limit:
        return len(data) * _MAX_PER_BYTE
    total = 0
    for opcode, arg, _ in pickletools.genops(data):
        if total > limit:
            break
        name = opcode.name
        if name in _NEW:
            total += _NEW[name] + _SLOT + _payload_bytes(arg)
        elif name in _OTHER:
            total += _OTHER[name]
        elif opcode.stack_after:
            total += _REFERENCE
    return total


def _payload_bytes(arg: object) -> int:
    if isinstance(arg, str):
        return 4 * len(arg)  # one wide character makes the whole string 4 bytes per character
    if isinstance(arg, (bytes, bytearray)):
        return len(arg)
    if isinstance(arg, int):
        return abs(arg).bit_length() // 8
    return 0
