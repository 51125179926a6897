"""The self-describing ``.shac`` file container.

Why a custom container instead of ``torch.save`` / ``np.savez``: a compressed radiance field is
only useful if it can be read back years later, on another machine, by a different build, and
without executing anything from the file.  Pickle-based formats fail all three, and zip-based
ones add per-entry overhead that matters when whole scenes are a few hundred kilobytes.  This
format is a flat, versioned byte layout with a JSON header (human-inspectable metadata) and
named binary sections, each protected by a CRC32, so that every kind of damage -- a truncated
download, a flipped bit, the wrong file passed on the command line -- is reported as a single,
readable :class:`ContainerError` instead of a crash or silently wrong weights.

Layout (all integers little-endian)::

    magic        8 bytes   b"SHACIRA\\x00"
    version      u16       FORMAT_VERSION (2; version 1 files are still read)
    reserved     u16       0
    header_len   u32
    header       header_len bytes: UTF-8 JSON (an object), zlib-deflated in version 2, plain in version 1
    header_crc   u32       crc32(header), of the bytes as stored
    n_sections   u32
    n_sections times:
        name_len     u16   (>= 1)
        name         name_len bytes of UTF-8
        payload_len  u64
        payload_crc  u32   crc32(name_len | name | payload_len | payload), i.e. the section's
                           framing is covered too, so a damaged name cannot decode silently
        payload      payload_len bytes

Nothing may follow the last section.  Every length field is checked against the bytes that
are actually left before anything is sliced or allocated, so a corrupted length can neither
trigger a huge allocation nor a long loop.

Version 2 deflates the JSON header: the header is metadata, but in a 12 kB image file its ~830 plain bytes were 7%
of the file. Inflating is capped (``MAX_HEADER_JSON``), so a damaged or hostile header cannot expand without bound.

This module also provides :func:`pack_array` / :func:`unpack_array`, a tiny self-describing
raw array encoding (dtype allowlist, shape, little-endian C-order bytes) for section payloads.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import struct
import tempfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shacira_nerf.errors import UserError

__all__ = [
    "ARRAY_DTYPES",
    "FORMAT_VERSION",
    "MAGIC",
    "ContainerError",
    "container_layout",
    "decode_container",
    "describe_sections",
    "encode_container",
    "pack_array",
    "pack_scaled_int8",
    "unpack_scaled_int8",
    "dequantize_int8",
    "is_scaled_int8",
    "INT8_LEVELS",
    "MIN_INT8_SCALE",
    "MAX_INT8_SCALE",
    "atomic_output",
    "check_writable",
    "escape",
    "naming",
    "read_container",
    "read_file_bytes",
    "unpack_array",
    "write_bytes_atomic",
    "write_container",
]

MAGIC: bytes = b"SHACIRA\x00"
FORMAT_VERSION: int = 2
"""The version this build writes."""
READABLE_VERSIONS: tuple[int, ...] = (1, 2)
"""Versions this build reads: 1 (plain JSON header) and 2 (deflated JSON header)."""
MAX_HEADER_JSON: int = 64 * 2**10
"""Largest JSON header a file may have, inflated (version 2) or plain (version 1): 64 KiB. Real headers are 0.8 kB
(an image) to 3.7 kB (a nerfacto-sized scene with two proposal networks; cameras live in a section), so this is a
17x margin, and parsing the largest allowed header costs milliseconds and well under a megabyte."""
MAX_FILE_BYTES: int = 2**30
"""Largest file :func:`read_file_bytes` reads (1 GiB; scene files are a few MB)."""

_PREFIX = struct.Struct("<8sHHI")  # magic, version, reserved, header_len
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_MIN_SECTION_BYTES = _U16.size + 1 + _U64.size + _U32.size  # smallest possible framed section
_MAX_U32 = 2**32 - 1


class ContainerError(UserError, ValueError):
    """Any problem reading or writing a ``.shac`` container; the message is always one line."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


def escape(text: object) -> str:
    """``text`` safe to print on a terminal: every non-printable character (newlines, escape sequences, other
    control and format characters) written as a Python escape, so a file's strings can neither break a one-line
    error nor drive the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


_one_line = escape


def _show_path(path: str | os.PathLike[str]) -> str:
    return escape(os.fspath(path))


@contextlib.contextmanager
def naming(path: str | os.PathLike[str]) -> Iterator[None]:
    """Prefix every ContainerError raised inside with the file's name: ``<path>: <why>``."""
    try:
        yield
    except ContainerError as exc:
        raise type(exc)(f"{_show_path(path)}: {exc}") from None


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def _encode_header(header: Mapping[str, Any]) -> bytes:
    """The header as deflated JSON, keys sorted: the same model gives the same bytes however its config was loaded
    (a config reloaded from config.yml orders its keys differently from the one in training)."""
    if not isinstance(header, Mapping):
        raise ContainerError(f"header must be a dict, got {type(header).__name__}")
    try:
        text = json.dumps(dict(header), ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ContainerError(f"header is not JSON-serialisable: {exc}") from exc
    blob = zlib.compress(text.encode("utf-8"), 9)
    if len(blob) > _MAX_U32:
        raise ContainerError(f"header is too large ({len(blob)} bytes)")
    return blob


def _section_prefix(name_blob: bytes, payload_len: int) -> bytes:
    return _U16.pack(len(name_blob)) + name_blob + _U64.pack(payload_len)


def encode_container(header: Mapping[str, Any], sections: Sequence[tuple[str, bytes]] | Mapping[str, bytes]) -> bytes:
    """Serialise ``header`` (a JSON-able dict) and named byte ``sections`` into container bytes.

    ``sections`` is a sequence of ``(name, payload)`` pairs (or a dict, in its order).

    The output is a pure function of the inputs (same dict insertion order and section order give
    byte-identical files).
    """
    header_blob = _encode_header(header)
    sections = list(sections.items()) if isinstance(sections, Mapping) else list(sections)
    if len(sections) > _MAX_U32:
        raise ContainerError(f"too many sections ({len(sections)})")
    parts: list[bytes] = [
        _PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(header_blob)),
        header_blob,
        _U32.pack(zlib.crc32(header_blob)),
        _U32.pack(len(sections)),
    ]
    seen: set[str] = set()
    for item in sections:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise ContainerError("each section must be a (name, bytes) pair")
        name, payload = item
        if not isinstance(name, str) or not name:
            raise ContainerError(f"section name must be a non-empty str, got {name!r}")
        if name in seen:
            raise ContainerError(f"duplicate section name {name!r}")
        seen.add(name)
        name_blob = name.encode("utf-8")
        if len(name_blob) > 0xFFFF:
            raise ContainerError(f"section name too long ({len(name_blob)} bytes UTF-8)")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise ContainerError(f"section {name!r} payload must be bytes, got {type(payload).__name__}")
        payload = bytes(payload)
        prefix = _section_prefix(name_blob, len(payload))
        crc = zlib.crc32(payload, zlib.crc32(prefix))
        parts += [prefix, _U32.pack(crc), payload]
    return b"".join(parts)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _sniff_foreign(data: bytes) -> str:
    """Explain what a non-shacira file most likely is (used for the bad-magic error)."""
    head = bytes(data[:16])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "not a shacira file: this is a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return "not a shacira file: this is a JPEG image"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return "not a shacira file: this looks like a PyTorch/nerfstudio checkpoint (.ckpt, a zip archive)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "not a shacira file: this looks like a pickled (legacy PyTorch) checkpoint"
    if head.startswith(b"\x93NUMPY"):
        return "not a shacira file: this is a NumPy .npy array"
    if head.startswith(b"\x1f\x8b"):
        return "not a shacira file: this is a gzip archive"
    if head.lstrip()[:1] in (b"{", b"["):
        return "not a shacira file: this looks like a JSON/text file"
    return "not a shacira file (bad magic bytes)"


class ForeignFileError(ContainerError):
    """Not a shacira file at all; ``checkpoint`` says whether it looks like a training checkpoint (the application
    can say how to make a file from one)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.checkpoint = "checkpoint" in message


class _Section:
    __slots__ = ("name", "offset", "payload_len", "payload_offset")

    def __init__(self, name: str, offset: int, payload_offset: int, payload_len: int) -> None:
        self.name = name
        self.offset = offset
        self.payload_offset = payload_offset
        self.payload_len = payload_len

    @property
    def framed_bytes(self) -> int:
        return self.payload_offset + self.payload_len - self.offset


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ContainerError(f"header has duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> float:
    raise ContainerError(f"header holds {name}, not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ContainerError(f"header holds the number {escape(text[:40])}, which is not finite in float64")
    return value


def _parse(data: bytes | bytearray | memoryview) -> tuple[dict[str, Any], int, list[_Section]]:
    """Validate ``data`` completely; return (header, header_region_bytes, sections)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ContainerError(f"expected bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    size = len(view)
    if size == 0:
        raise ContainerError("file is empty")
    if size < len(MAGIC):
        if MAGIC.startswith(bytes(view)):
            raise ContainerError(f"truncated file: {size} bytes, too short for the file signature")
        raise ForeignFileError(_sniff_foreign(bytes(view)))
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise ForeignFileError(_sniff_foreign(bytes(view[:16])))
    if size < _PREFIX.size:
        raise ContainerError(f"truncated file: file prefix needs {_PREFIX.size} bytes, {size} left")
    _, version, reserved, header_len = _PREFIX.unpack_from(view, 0)
    if version not in READABLE_VERSIONS:
        hint = " (upgrade shacira-nerf)" if version > FORMAT_VERSION else ""
        readable = f"{READABLE_VERSIONS[0]}-{READABLE_VERSIONS[-1]}"
        raise ContainerError(f"unsupported format version {version}: this build reads versions {readable}{hint}")
    if reserved != 0:
        raise ContainerError(f"reserved field is {reserved}, expected 0 (file corrupted)")
    pos = _PREFIX.size

    def need(what: str, n: int) -> None:
        left = size - pos
        if n > left:
            raise ContainerError(f"truncated file: {what} needs {n} bytes, {left} left")

    need("header", header_len)
    header_blob = view[pos : pos + header_len]
    pos += header_len
    need("header checksum", _U32.size)
    (header_crc,) = _U32.unpack_from(view, pos)
    pos += _U32.size
    if zlib.crc32(header_blob) != header_crc:
        raise ContainerError("header checksum mismatch")
    if version == 1 and header_len > MAX_HEADER_JSON:
        raise ContainerError(f"header is {header_len} bytes, more than the {MAX_HEADER_JSON} allowed")
    header_text = _inflate_header(bytes(header_blob)) if version >= 2 else bytes(header_blob)
    try:
        header = json.loads(
            header_text.decode("utf-8"),
            object_pairs_hook=_reject_duplicate_keys,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except ContainerError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ContainerError("header is not valid JSON") from exc
    if not isinstance(header, dict):
        raise ContainerError(f"header is not a JSON object (got {type(header).__name__})")
    need("section count", _U32.size)
    (n_sections,) = _U32.unpack_from(view, pos)
    pos += _U32.size
    header_region = pos
    left = size - pos
    if n_sections * _MIN_SECTION_BYTES > left:
        raise ContainerError(
            f"truncated file: {n_sections} sections need at least {n_sections * _MIN_SECTION_BYTES} bytes, {left} left"
        )

    sections: list[_Section] = []
    seen: set[str] = set()
    for index in range(n_sections):
        start = pos
        need(f"section #{index} name length", _U16.size)
        (name_len,) = _U16.unpack_from(view, pos)
        pos += _U16.size
        if name_len == 0:
            raise ContainerError(f"section #{index} has an empty name (file corrupted)")
        need(f"section #{index} name", name_len)
        try:
            name = bytes(view[pos : pos + name_len]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ContainerError(f"section #{index} name is not valid UTF-8 (file corrupted)") from exc
        pos += name_len
        need(f"section {name!r} length", _U64.size + _U32.size)
        (payload_len,) = _U64.unpack_from(view, pos)
        pos += _U64.size
        (crc,) = _U32.unpack_from(view, pos)
        pos += _U32.size
        need(f"section {name!r}", payload_len)
        actual = zlib.crc32(view[pos : pos + payload_len], zlib.crc32(view[start : pos - _U32.size]))
        if actual != crc:
            raise ContainerError(f"checksum mismatch in section {name!r} (file corrupted)")
        if name in seen:
            raise ContainerError(f"duplicate section name {name!r}")
        seen.add(name)
        sections.append(_Section(name, start, pos, payload_len))
        pos += payload_len
    if pos != size:
        raise ContainerError(f"trailing bytes after last section ({size - pos} bytes)")
    return header, header_region, sections


def _inflate_header(blob: bytes) -> bytes:
    """The JSON bytes of a version-2 header (one zlib stream, nothing after it, at most ``MAX_HEADER_JSON``)."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(blob, MAX_HEADER_JSON)
    except zlib.error as exc:
        raise ContainerError("header is not valid deflate data (file corrupted)") from exc
    if inflater.unconsumed_tail:
        raise ContainerError(f"header inflates to more than the {MAX_HEADER_JSON} bytes allowed")
    if not inflater.eof or inflater.unused_data:
        raise ContainerError("header is not one complete deflate stream (file corrupted)")
    return text


def decode_container(data: bytes | bytearray | memoryview) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Parse and fully verify container bytes; return ``(header, {name: payload})`` in file order.

    Raises :class:`ContainerError` (one-line message) for every malformed input.
    """
    header, _, sections = _parse(data)
    view = memoryview(data).cast("B")
    payloads = {s.name: bytes(view[s.payload_offset : s.payload_offset + s.payload_len]) for s in sections}
    return header, payloads


def describe_sections(data: bytes | bytearray | memoryview) -> list[dict[str, Any]]:
    """Per-section ``name``, ``offset`` (of its framing), ``payload_offset``, ``payload_bytes``,
    ``framed_bytes`` (payload plus name/length/checksum framing), in file order.  Validates ``data``."""
    return container_layout(data)["sections"]


def container_layout(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Byte accounting of a (fully validated) container, e.g. for ``shacira info``.

    ``header_bytes`` covers magic through the section count; ``header_bytes`` plus the sum of
    every section's ``framed_bytes`` equals ``total_bytes == len(data)``.
    """
    header, header_region, sections = _parse(data)
    return {
        "format_version": _PREFIX.unpack_from(memoryview(data).cast("B"), 0)[1],  # the file's, not this build's
        "header": header,
        "header_bytes": header_region,
        "sections": [
            {
                "name": s.name,
                "offset": s.offset,
                "payload_offset": s.payload_offset,
                "payload_bytes": s.payload_len,
                "framed_bytes": s.framed_bytes,
            }
            for s in sections
        ],
        "total_bytes": len(memoryview(data).cast("B")),
    }


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _current_umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _os_error_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "folder does not exist"
    if isinstance(exc, IsADirectoryError):
        return "it is a folder"
    return escape(exc.strerror or type(exc).__name__)


def _write_error(shown: str, why: str) -> ContainerError:
    return ContainerError(f"cannot write {shown}: {why}")


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise a one-line ContainerError unless a file could be written at ``path`` (its folder exists and is
    writable, and ``path`` is not a folder); called before minutes of work, and again by every atomic write."""
    target = Path(path)
    shown = _show_path(target)
    folder = target.parent
    try:
        folder_is_dir = stat.S_ISDIR(os.stat(folder).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        folder_is_dir = False
    except OSError as exc:
        raise _write_error(shown, _os_error_reason(exc)) from None
    if not folder_is_dir:
        raise _write_error(shown, f"folder {_show_path(folder)} does not exist")
    try:
        target_is_dir = stat.S_ISDIR(os.stat(target).st_mode)
    except OSError:  # usually "does not exist yet"; anything else surfaces from mkstemp/replace below
        target_is_dir = False
    if target_is_dir:
        raise _write_error(shown, "it is a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _write_error(shown, "permission denied")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path`` (same suffix) to write; on success it is fsync'ed and renamed
    over ``path``, otherwise removed.

    The name comes from :func:`tempfile.mkstemp` (unique, created exclusively: a planted file or symlink cannot
    redirect the write). A new file gets the usual ``0o666 & ~umask`` mode; replacing a file keeps that file's mode.
    Every OSError (a read-only folder, a full disk) becomes one-line ContainerError naming ``path``.
    """
    target = Path(path)
    shown = _show_path(target)
    check_writable(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = 0o666 & ~_current_umask()
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}")
    except OSError as exc:
        raise _write_error(shown, _os_error_reason(exc)) from None
    tmp = Path(tmp_name)
    try:
        with contextlib.suppress(OSError, AttributeError):
            os.fchmod(fd, mode)
        os.close(fd)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _write_error(shown, _os_error_reason(exc)) from None
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable; best effort (not supported everywhere)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> int:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`); return the number of bytes written."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return len(memoryview(data).cast("B"))


def write_container(
    path: str | os.PathLike[str], header: Mapping[str, Any], sections: Sequence[tuple[str, bytes]]
) -> int:
    """Encode and write a container atomically (:func:`write_bytes_atomic`); return the number of bytes written.

    Encoding errors are raised before the disk is touched; readers never observe a half-written file.
    """
    return write_bytes_atomic(path, encode_container(header, sections))


def read_file_bytes(path: str | os.PathLike[str]) -> bytes:
    """A file's bytes, with one-line ContainerErrors for a missing path, a folder, an unreadable or oversized file.

    The messages say why, not which file: callers add the name (:func:`naming`), once, as ``<path>: <why>``.
    """
    target = Path(path)
    try:
        st = os.stat(target)
        if stat.S_ISDIR(st.st_mode):
            raise ContainerError("is a folder, not a .shac file")
        if st.st_size > MAX_FILE_BYTES:
            raise ContainerError(f"file is {st.st_size:,} bytes, more than the {MAX_FILE_BYTES:,} a .shac file may be")
        with open(target, "rb") as fh:  # read(n) allocates n bytes first: ask for what the file holds
            data = fh.read(st.st_size + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise ContainerError("no such file") from None
    except IsADirectoryError:
        raise ContainerError("is a folder, not a .shac file") from None
    except OSError as exc:
        raise ContainerError(f"cannot read: {_os_error_reason(exc)}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ContainerError(f"file is more than the {MAX_FILE_BYTES:,} bytes a .shac file may be")
    return data


def read_container(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Read and fully verify a container file (see :func:`decode_container`); errors name the file."""
    with naming(path):
        return decode_container(read_file_bytes(path))


# --------------------------------------------------------------------------------------------
# Raw arrays
# --------------------------------------------------------------------------------------------

#: dtype code (stored in files; never renumber) -> little-endian numpy dtype.
ARRAY_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f2"),
    2: np.dtype("<f4"),
    3: np.dtype("<f8"),
    4: np.dtype("i1"),
    5: np.dtype("<i2"),
    6: np.dtype("<i4"),
    7: np.dtype("<i8"),
    8: np.dtype("u1"),
    9: np.dtype("<u2"),
    10: np.dtype("<u4"),
    11: np.dtype("<u8"),
}
_DTYPE_CODES: dict[tuple[str, int], int] = {(dt.kind, dt.itemsize): code for code, dt in ARRAY_DTYPES.items()}
_ARRAY_HEAD = struct.Struct("<BB")  # dtype code, ndim
_MAX_NDIM = 64


def pack_array(arr: np.ndarray) -> bytes:
    """Serialise an array as: dtype code u8 | ndim u8 | shape u64[ndim] | little-endian C-order data.

    Only the dtypes in :data:`ARRAY_DTYPES` are allowed (no objects, no pickle).
    """
    a = np.asarray(arr)
    code = _DTYPE_CODES.get((a.dtype.kind, a.dtype.itemsize))
    if code is None:
        allowed = ", ".join(str(dt) for dt in ARRAY_DTYPES.values())
        raise ValueError(f"cannot pack dtype {a.dtype}; allowed: {allowed}")
    if a.ndim > _MAX_NDIM:
        raise ValueError(f"cannot pack an array with {a.ndim} dimensions")
    le = np.ascontiguousarray(a, dtype=ARRAY_DTYPES[code])
    head = _ARRAY_HEAD.pack(code, a.ndim) + b"".join(_U64.pack(n) for n in a.shape)
    return head + le.tobytes(order="C")


def unpack_array(payload: bytes | bytearray | memoryview) -> np.ndarray:
    """Inverse of :func:`pack_array`; validates everything and returns a writable native-order copy."""
    view = memoryview(payload).cast("B")
    if len(view) < _ARRAY_HEAD.size:
        raise ContainerError(f"array payload too short ({len(view)} bytes)")
    code, ndim = _ARRAY_HEAD.unpack_from(view, 0)
    dtype = ARRAY_DTYPES.get(code)
    if dtype is None:
        raise ContainerError(f"array payload has unknown dtype code {code}")
    if ndim > _MAX_NDIM:
        raise ContainerError(f"array payload has {ndim} dimensions (max {_MAX_NDIM})")
    offset = _ARRAY_HEAD.size + ndim * _U64.size
    if len(view) < offset:
        raise ContainerError(f"array payload too short for its {ndim}-d shape ({len(view)} bytes)")
    shape = tuple(_U64.unpack_from(view, _ARRAY_HEAD.size + i * _U64.size)[0] for i in range(ndim))
    count = 1
    for n in shape:
        count *= n
    expected = count * dtype.itemsize
    got = len(view) - offset
    if expected != got:
        raise ContainerError(
            f"array payload size mismatch: shape {shape} {dtype.name} needs {expected} bytes, got {got}"
        )
    try:
        flat = np.frombuffer(view, dtype=dtype, count=count, offset=offset)
        return flat.astype(dtype.newbyteorder("="), copy=True).reshape(shape)
    except (ValueError, OverflowError, MemoryError) as exc:
        raise ContainerError(f"array payload has an unusable shape {shape}") from exc


# --------------------------------------------------------------------------------------------
# Scaled int8 arrays (network tensors stored at 8 bits)
# --------------------------------------------------------------------------------------------

INT8_LEVELS = 127
"""Largest magnitude of a stored int8 value: the grid is symmetric, -127..127 (-128 is never written)."""
MIN_INT8_SCALE = float(np.finfo(np.float32).tiny)
"""Smallest scale a file may hold: float32's smallest normal number. A subnormal scale would decode to subnormal
weights, which some devices flush to zero, so the same file could compute differently."""
MAX_INT8_SCALE = 2.0**57
"""Largest scale a file may hold: every decoded value stays below 2^64 in magnitude, far beyond any trained weight
and far from float32's overflow, so ``dequantize_int8`` is always finite."""
_SCALE = struct.Struct("<f")


def dequantize_int8(values: np.ndarray, scale: float) -> np.ndarray:
    """The float32 numbers an int8 array with its scale stands for: ``values * scale``, one IEEE float32
    multiplication per number, so every machine decodes the same bits (the writer checks them with this function)."""
    return values.astype(np.float32) * np.float32(scale)


def pack_scaled_int8(values: np.ndarray, scale: float) -> bytes:
    """Serialise int8 values and their float32 scale: :func:`pack_array` of the values, then the scale (4 bytes,
    little-endian float32). The scale goes in the section, not the header: 4 bytes instead of a JSON name and
    number per tensor."""
    a = np.asarray(values)
    if a.dtype != np.int8:
        raise ValueError(f"scaled int8 values must be int8, got {a.dtype}")
    return pack_array(a) + _SCALE.pack(scale)


def is_scaled_int8(payload: bytes | bytearray | memoryview) -> bool:
    """Whether an array payload holds int8 values (then :func:`pack_scaled_int8` wrote it, with a scale)."""
    return len(payload) >= 1 and ARRAY_DTYPES.get(memoryview(payload).cast("B")[0]) == np.dtype("i1")


def unpack_scaled_int8(payload: bytes | bytearray | memoryview, shape: tuple[int, ...]) -> tuple[np.ndarray, float]:
    """Inverse of :func:`pack_scaled_int8` for an array of the ``shape`` the reader expects: the length and the
    array head are checked against that shape before anything is allocated. The scale is returned as read; its
    range is the reader's to check (``MIN_INT8_SCALE``, ``MAX_INT8_SCALE``)."""
    view = memoryview(payload).cast("B")
    head = _ARRAY_HEAD.pack(_DTYPE_CODES[("i", 1)], len(shape)) + b"".join(_U64.pack(n) for n in shape)
    expected = len(head) + math.prod(shape) + _SCALE.size
    if len(view) != expected:
        raise ContainerError(f"is {len(view)} bytes; int8 {shape} with its scale takes {expected}")
    if bytes(view[: len(head)]) != head:
        raise ContainerError(f"does not hold an int8 array of shape {shape}")
    (scale,) = _SCALE.unpack_from(view, len(view) - _SCALE.size)
    return unpack_array(view[: len(view) - _SCALE.size]), scale
