"""Tests for shacira_nerf.codec: the .shac container, raw arrays and the integer entropy coder.

The container is the on-disk contract of the project, so these tests pin down both round trips
and the exact, one-line error for each kind of bad input (including every truncation point and
every single-bit flip of a small file, plus a seeded fuzz of a realistic one).
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from shacira_nerf.codec import (
    ARRAY_DTYPES,
    FORMAT_VERSION,
    MAGIC,
    ContainerError,
    IntegerTable,
    container_layout,
    decode_container,
    decode_symbols,
    describe_sections,
    empirical_table,
    encode_container,
    encode_symbols,
    pack_array,
    pack_table,
    quantize_pmf,
    read_container,
    table_bits,
    unpack_array,
    unpack_table,
    write_container,
)
from shacira_nerf.codec import container as container_mod
from shacira_nerf.codec.container import MAX_HEADER_JSON, escape, write_bytes_atomic

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _small_container() -> tuple[dict, list[tuple[str, bytes]], bytes]:
    header = {"format": "shacira", "scene": "lego", "levels": [16, 32], "note": "héllo"}
    sections = [
        ("a", b"\x00\x01\x02\x03"),
        ("empty", b""),
        ("latents/field/3", bytes(range(40))),
    ]
    return header, sections, encode_container(header, sections)


def _raw_container(header_blob: bytes, raw_sections: list[tuple[bytes, bytes]], version: int = 1) -> bytes:
    """Build container bytes by hand (valid checksums), to craft inputs the encoder refuses to make.

    Version 1 by default: its header is plain JSON, so crafted header bytes reach the JSON checks directly."""
    out = [struct.pack("<8sHHI", MAGIC, version, 0, len(header_blob)), header_blob]
    out.append(struct.pack("<I", zlib.crc32(header_blob)))
    out.append(struct.pack("<I", len(raw_sections)))
    for name, payload in raw_sections:
        prefix = struct.pack("<H", len(name)) + name + struct.pack("<Q", len(payload))
        out += [prefix, struct.pack("<I", zlib.crc32(payload, zlib.crc32(prefix))), payload]
    return b"".join(out)


def _message(data: bytes) -> str:
    with pytest.raises(ContainerError) as info:
        decode_container(data)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def _skewed_table(k: int = 64, scale: float = 4.0, offset: int = 0, precision: int = 16) -> IntegerTable:
    pmf = np.exp(-np.arange(k) / scale)
    return IntegerTable.from_pmf(pmf, offset=offset, precision=precision)


def _realistic_container() -> tuple[dict, list[tuple[str, bytes]], bytes]:
    rng = np.random.default_rng(1234)
    t0 = _skewed_table(33, 3.0, offset=-16)
    t1 = _skewed_table(9, 1.5, offset=-4, precision=12)
    v0 = np.clip(np.round(rng.laplace(0, 3.0, 3000)), -16, 16).astype(np.int64)
    v1 = np.clip(np.round(rng.laplace(0, 1.0, 1500)), -4, 4).astype(np.int64)
    coded = encode_symbols([(v0, t0), (v1, t1)])
    header = {
        "format": "shacira",
        "model": {"levels": 16, "features": 2, "hidden": 64},
        "streams": [{"name": "latents/field/0", "count": 3000}, {"name": "latents/field/1", "count": 1500}],
        "aabb": [[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]],
    }
    sections = [
        ("tables/0", pack_table(t0)),
        ("tables/1", pack_table(t1)),
        ("latents", coded),
        ("decoder/mlp.0.weight", pack_array(rng.standard_normal((64, 35)).astype(np.float16))),
        ("decoder/mlp.0.bias", pack_array(rng.standard_normal(64).astype(np.float32))),
    ]
    return header, sections, encode_container(header, sections)


# --------------------------------------------------------------------------------------------
# raw arrays
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", sorted({dt.name for dt in ARRAY_DTYPES.values()}))
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 0, 2), (2, 3, 4)])
def test_pack_unpack_round_trip(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        arr = rng.standard_normal(shape).astype(dt)
    else:
        info = np.iinfo(dt)
        arr = rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
    out = unpack_array(pack_array(arr))
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable and out.flags.c_contiguous
    out[...] = 0  # writable copy, never a view of the payload


def test_pack_array_big_endian_and_non_contiguous() -> None:
    arr = np.arange(24, dtype=">i4").reshape(4, 6)[:, ::2]
    out = unpack_array(pack_array(arr))
    assert out.dtype == np.dtype("int32") and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    assert pack_array(arr) == pack_array(np.ascontiguousarray(arr, dtype="<i4"))


@pytest.mark.parametrize("bad", [np.zeros(3, bool), np.zeros(3, complex), np.array(["x"]), np.array([{}], object)])
def test_pack_array_rejects_dtypes(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="cannot pack dtype"):
        pack_array(bad)


def test_unpack_array_errors() -> None:
    good = pack_array(np.arange(6, dtype=np.float32).reshape(2, 3))
    with pytest.raises(ContainerError, match="too short"):
        unpack_array(b"\x02")
    with pytest.raises(ContainerError, match="unknown dtype code 99"):
        unpack_array(bytes([99]) + good[1:])
    with pytest.raises(ContainerError, match="size mismatch"):
        unpack_array(good[:-1])
    with pytest.raises(ContainerError, match="size mismatch"):
        unpack_array(good + b"\x00")
    with pytest.raises(ContainerError, match="too short for its"):
        unpack_array(good[:5])
    with pytest.raises(ContainerError, match="dimensions"):
        unpack_array(bytes([2, 200]) + good[2:])
    huge = bytes([2, 2]) + struct.pack("<QQ", 2**40, 2**40)  # absurd shape, no allocation attempted
    with pytest.raises(ContainerError, match="size mismatch"):
        unpack_array(huge)


# --------------------------------------------------------------------------------------------
# container round trips
# --------------------------------------------------------------------------------------------


def test_container_round_trip_and_layout() -> None:
    header, sections, data = _small_container()
    assert data[:8] == MAGIC and len(MAGIC) == 8
    got_header, got_sections = decode_container(data)
    assert got_header == header
    assert list(got_sections.items()) == sections
    assert encode_container(header, sections) == data  # byte-identical when re-encoded
    assert decode_container(bytearray(data))[1] == got_sections
    assert decode_container(memoryview(data))[1] == got_sections
    assert encode_container(header, dict(sections)) == data  # a dict of sections keeps its order

    layout = container_layout(data)
    assert layout["total_bytes"] == len(data)
    assert layout["header_bytes"] + sum(s["framed_bytes"] for s in layout["sections"]) == len(data)
    assert [s["name"] for s in layout["sections"]] == ["a", "empty", "latents/field/3"]
    for s, (name, payload) in zip(layout["sections"], sections, strict=True):
        assert s["payload_bytes"] == len(payload)
        assert s["framed_bytes"] == 2 + len(name.encode()) + 8 + 4 + len(payload)
        assert data[s["payload_offset"] : s["payload_offset"] + len(payload)] == payload
    assert describe_sections(data) == layout["sections"]


def test_container_no_sections_and_unicode_names() -> None:
    data = encode_container({}, [])
    assert decode_container(data) == ({}, {})
    header, secs = decode_container(encode_container({"x": None}, [("ß/ünï", b"1"), ("b", b"2")]))
    assert header == {"x": None} and list(secs) == ["ß/ünï", "b"]


def test_encode_container_rejects_bad_inputs() -> None:
    with pytest.raises(ContainerError, match="duplicate section name 'x'"):
        encode_container({}, [("x", b""), ("x", b"1")])
    with pytest.raises(ContainerError, match="not JSON-serialisable"):
        encode_container({"a": object()}, [])
    with pytest.raises(ContainerError, match="not JSON-serialisable"):
        encode_container({"a": float("nan")}, [])
    with pytest.raises(ContainerError, match="non-empty str"):
        encode_container({}, [("", b"")])
    with pytest.raises(ContainerError, match="must be bytes"):
        encode_container({}, [("x", "text")])  # type: ignore[list-item]
    with pytest.raises(ContainerError, match="must be a dict"):
        encode_container([1, 2], [])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# container errors
# --------------------------------------------------------------------------------------------


def test_empty_file() -> None:
    assert _message(b"") == "file is empty"


def test_png_is_named() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(50)
    assert _message(png) == "not a shacira file: this is a PNG image"


def test_checkpoint_zip_is_named() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("step-000029999/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("step-000029999/version", b"3")
    msg = _message(buf.getvalue())
    assert msg.startswith("not a shacira file: this looks like a PyTorch/nerfstudio checkpoint (.ckpt, a zip archive)")
    assert "shacira" not in msg.replace("not a shacira file", "")  # the codec knows no command; file_layer adds it


def test_wrong_magic() -> None:
    _, _, data = _small_container()
    assert _message(b"NOTSHAC!" + data[8:]) == "not a shacira file (bad magic bytes)"
    assert _message(b"abc") == "not a shacira file (bad magic bytes)"


def test_newer_and_older_version() -> None:
    data = _raw_container(b"{}", [], version=7)
    assert _message(data) == "unsupported format version 7: this build reads versions 1-2 (upgrade shacira-nerf)"
    assert _message(_raw_container(b"{}", [], version=0)).startswith("unsupported format version 0")


def test_reserved_field() -> None:
    _, _, data = _small_container()
    bad = data[:10] + b"\x01\x00" + data[12:]
    assert "reserved field" in _message(bad)


def test_header_errors() -> None:
    assert _message(_raw_container(b"{not json", [])) == "header is not valid JSON"
    assert _message(_raw_container(b"\xff\xfe", [])) == "header is not valid JSON"
    assert _message(_raw_container(b"[1, 2]", [])).startswith("header is not a JSON object")
    assert "duplicate key 'a'" in _message(_raw_container(b'{"a": 1, "a": 2}', []))
    _, _, data = _small_container()
    header_len = struct.unpack_from("<I", data, 12)[0]
    flipped = bytearray(data)
    flipped[16 + header_len // 2] ^= 0x10
    assert _message(bytes(flipped)) == "header checksum mismatch"


def test_version_2_header_is_deflated_and_version_1_still_reads() -> None:
    """Files are written as version 2 (deflated JSON header, smaller); version-1 files (plain JSON) still decode."""
    header = {"kind": "test", "grids": {"g": {"geometry": {"dim": 2, "num_levels": 24}}}, "names": ["a"] * 50}
    data = encode_container(header, [("x", b"1")])
    assert struct.unpack_from("<H", data, 8)[0] == FORMAT_VERSION == 2
    plain = json.dumps(header, separators=(",", ":")).encode()
    assert struct.unpack_from("<I", data, 12)[0] < len(plain) // 2
    assert decode_container(data) == (header, {"x": b"1"})
    assert container_layout(data)["format_version"] == 2
    old = _raw_container(plain, [(b"x", b"1")], version=1)
    assert decode_container(old) == (header, {"x": b"1"})
    assert container_layout(old)["format_version"] == 1


def test_version_2_header_errors() -> None:
    """A version-2 header that is not one bounded deflate stream is a one-line error, never a huge allocation."""
    assert _message(_raw_container(b"{}", [], version=2)) == "header is not valid deflate data (file corrupted)"
    truncated = zlib.compress(b'{"a": 1}')[:-3]
    assert "deflate" in _message(_raw_container(truncated, [], version=2))
    trailing = zlib.compress(b'{"a": 1}') + b"xx"
    assert (
        _message(_raw_container(trailing, [], version=2))
        == "header is not one complete deflate stream (file corrupted)"
    )
    bomb = zlib.compress(b" " * (MAX_HEADER_JSON + 1), 9)  # ~65 kB that would inflate past the cap
    assert _message(_raw_container(bomb, [], version=2)).startswith("header inflates to more than")
    assert _message(_raw_container(zlib.compress(b"{not json"), [], version=2)) == "header is not valid JSON"


def test_duplicate_section_in_file() -> None:
    data = _raw_container(b"{}", [(b"x", b"1"), (b"x", b"2")])
    assert _message(data) == "duplicate section name 'x'"


def test_trailing_bytes() -> None:
    _, _, data = _small_container()
    assert _message(data + b"\x00").startswith("trailing bytes after last section")


def test_truncated_section_message() -> None:
    payload = bytes(1234)
    data = _raw_container(b"{}", [(b"latents/field/3", payload)])
    msg = _message(data[: len(data) - 1234 + 56])
    assert msg == "truncated file: section 'latents/field/3' needs 1234 bytes, 56 left"


def test_absurd_lengths_do_not_allocate() -> None:
    # a header length of 4 GiB and a section count of 4 billion on a tiny file
    data = bytearray(_raw_container(b"{}", [(b"x", b"1")]))
    big_header = bytes(data)
    big_header = big_header[:12] + struct.pack("<I", 2**32 - 1) + big_header[16:]
    assert _message(big_header).startswith("truncated file: header needs 4294967295 bytes")
    count_at = 16 + 2 + 4
    many = bytes(data[:count_at]) + struct.pack("<I", 2**32 - 1) + bytes(data[count_at + 4 :])
    assert _message(many).startswith("truncated file: 4294967295 sections need")
    name_len_at = count_at + 4
    payload_len_at = name_len_at + 2 + 1
    huge_payload = bytes(data[:payload_len_at]) + struct.pack("<Q", 2**64 - 1) + bytes(data[payload_len_at + 8 :])
    assert _message(huge_payload).startswith("truncated file: section 'x' needs 18446744073709551615 bytes")


def test_truncation_at_every_offset() -> None:
    _, _, data = _small_container()
    for cut in range(len(data)):
        msg = _message(data[:cut])
        if cut == 0:
            assert msg == "file is empty"
        else:
            assert msg.startswith("truncated file: "), (cut, msg)


def test_every_single_bit_flip_is_detected() -> None:
    _, _, data = _small_container()
    seen = set()
    for i in range(len(data)):
        for bit in range(8):
            corrupted = bytearray(data)
            corrupted[i] ^= 1 << bit
            seen.add(_message(bytes(corrupted)).split(":")[0].split(" (")[0])
    # a representative set of failure kinds shows up
    assert "header checksum mismatch" in seen
    assert any(s.startswith("checksum mismatch in section") for s in seen)
    assert "truncated file" in seen


def test_flipped_bit_in_each_section_names_it() -> None:
    header, sections, data = _small_container()
    for s in describe_sections(data):
        if s["payload_bytes"] == 0:
            continue
        corrupted = bytearray(data)
        corrupted[s["payload_offset"] + s["payload_bytes"] - 1] ^= 0x01
        assert _message(bytes(corrupted)) == f"checksum mismatch in section {s['name']!r} (file corrupted)"
        # the name is covered by the section checksum too
        corrupted = bytearray(data)
        corrupted[s["offset"] + 2] ^= 0x01
        assert "checksum mismatch in section" in _message(bytes(corrupted))


def test_fuzz_realistic_container() -> None:
    header, sections, data = _realistic_container()
    assert 2000 < len(data) < 20000
    ok_header, ok_sections = decode_container(data)
    rng = np.random.default_rng(20240607)
    raised = 0
    for _ in range(3000):
        kind = rng.integers(4)
        buf = bytearray(data)
        if kind == 0:  # truncation
            buf = buf[: int(rng.integers(len(buf)))]
        elif kind == 1:  # single bit flip
            buf[int(rng.integers(len(buf)))] ^= 1 << int(rng.integers(8))
        elif kind == 2:  # a burst of random bytes
            at = int(rng.integers(len(buf)))
            n = int(rng.integers(1, 16))
            buf[at : at + n] = rng.integers(0, 256, size=len(buf[at : at + n]), dtype=np.uint8).tobytes()
        else:  # several flips plus maybe extra bytes
            for _ in range(int(rng.integers(2, 6))):
                buf[int(rng.integers(len(buf)))] ^= 1 << int(rng.integers(8))
            if rng.integers(2):
                buf += rng.integers(0, 256, size=int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        try:
            got_header, got_sections = decode_container(bytes(buf))
        except ContainerError as exc:
            assert "\n" not in str(exc)
            raised += 1
            continue
        # only possible if the mutation was a no-op (e.g. a burst that rewrote the same bytes)
        assert got_header == ok_header and got_sections == ok_sections
    assert raised > 2900


def test_realistic_container_decodes_streams() -> None:
    header, sections, data = _realistic_container()
    got_header, secs = decode_container(data)
    tables = [unpack_table(secs["tables/0"]), unpack_table(secs["tables/1"])]
    counts = [s["count"] for s in got_header["streams"]]
    v0, v1 = decode_symbols(secs["latents"], list(zip(counts, tables, strict=True)))
    assert v0.shape == (3000,) and v1.shape == (1500,)
    assert v0.min() >= -16 and v1.max() <= 4
    assert unpack_array(secs["decoder/mlp.0.weight"]).dtype == np.float16


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def test_write_read_round_trip(tmp_path: Path) -> None:
    header, sections, data = _small_container()
    path = tmp_path / "scene.shac"
    n = write_container(path, header, sections)
    assert n == len(data) == path.stat().st_size
    assert path.read_bytes() == data
    assert read_container(path) == (header, dict(sections))
    assert read_container(str(path))[0] == header
    # overwrite in place, atomically
    n2 = write_container(path, {"v": 2}, [])
    assert read_container(path) == ({"v": 2}, {}) and n2 == path.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.shac"]


def test_replacing_a_file_keeps_its_mode_and_temp_names_are_unique(tmp_path: Path) -> None:
    path = tmp_path / "x.shac"
    path.write_bytes(b"old")
    path.chmod(0o640)
    write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o640
    # a planted file (or symlink) with the old fixed temporary name is neither followed nor touched
    decoy = tmp_path / "decoy"
    decoy.write_bytes(b"keep")
    (tmp_path / "x.shac.tmp").symlink_to(decoy)
    write_bytes_atomic(path, b"newer")
    assert path.read_bytes() == b"newer" and decoy.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decoy", "x.shac", "x.shac.tmp"]


def test_escape_makes_strings_from_files_printable() -> None:
    assert escape("ok\x1b[2Jgone\nnext\u202e") == "ok\\x1b[2Jgone\\nnext\\u202e"
    assert escape("café 3x") == "café 3x"
    assert "\x1b" not in str(ContainerError("bad \x1b[31m name"))


def test_headers_are_capped_and_non_finite_numbers_refused() -> None:
    too_big = {"pad": "x" * (MAX_HEADER_JSON + 10)}
    with pytest.raises(ContainerError, match="inflates to more than the 65536 bytes allowed"):
        decode_container(encode_container(too_big, []))
    for constant in ("NaN", "Infinity", "-Infinity", "1e999"):
        blob = zlib.compress(('{"a": %s}' % constant).encode())
        data = _raw_container(blob, [], version=2)
        with pytest.raises(ContainerError, match="not a finite number|not finite"):
            decode_container(data)


def test_written_file_is_not_private(tmp_path: Path) -> None:
    path = tmp_path / "x.shac"
    write_container(path, {}, [])
    old = os.umask(0o022)
    os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~old


def test_read_missing_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope.shac"
    with pytest.raises(ContainerError, match=r"^.*nope\.shac: no such file$"):
        read_container(missing)
    with pytest.raises(ContainerError, match="is a folder, not a .shac file"):
        read_container(tmp_path)


def test_read_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "image.shac"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))
    with pytest.raises(ContainerError, match="this is a PNG image"):
        read_container(path)
    path.write_bytes(b"")
    with pytest.raises(ContainerError) as info:
        read_container(path)
    assert str(info.value) == f"{path}: file is empty"


def test_write_into_missing_folder(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "out.shac"
    with pytest.raises(ContainerError) as info:
        write_container(target, {}, [])
    assert str(info.value) == f"cannot write {target}: folder {target.parent} does not exist"
    assert not (tmp_path / "missing").exists()


def test_write_onto_a_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(ContainerError, match="it is a folder"):
        write_container(tmp_path / "d", {}, [])


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores folder permissions")
def test_write_into_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ContainerError) as info:
            write_container(folder / "out.shac", {}, [])
        assert str(info.value) == f"cannot write {folder / 'out.shac'}: permission denied"
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


@pytest.mark.skipif(not hasattr(os, "fork") or os.geteuid() != 0, reason="needs root to drop privileges")
def test_write_into_read_only_folder_as_unprivileged_child(tmp_path: Path) -> None:
    """When the suite runs as root, check the real permission path in a child that drops to nobody."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    tmp_path.chmod(0o755)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        message = "no error"
        try:
            os.setgid(65534)
            os.setuid(65534)
            write_container(folder / "out.shac", {}, [])
        except ContainerError as exc:
            message = str(exc)
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            message = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write_end, message.encode())
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as fh:
        message = fh.read().decode()
    assert message == f"cannot write {folder / 'out.shac'}: permission denied"
    assert list(folder.iterdir()) == []


def test_write_permission_denied_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated so that it also runs as root.
    def deny(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(container_mod.tempfile, "mkstemp", deny)
    with pytest.raises(ContainerError) as info:
        write_container(tmp_path / "out.shac", {}, [])
    assert str(info.value) == f"cannot write {tmp_path / 'out.shac'}: permission denied"


def test_failed_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keep.shac"
    write_container(path, {"old": True}, [])
    before = path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(container_mod.os, "fsync", broken_fsync)
    with pytest.raises(ContainerError, match="cannot write .*: No space left on device"):
        write_container(path, {"new": True}, [("x", b"1" * 1000)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.shac"]
    assert path.read_bytes() == before

    def interrupted(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.undo()
    monkeypatch.setattr(container_mod.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_container(path, {"new": True}, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.shac"]


def test_encode_error_does_not_touch_disk(tmp_path: Path) -> None:
    with pytest.raises(ContainerError, match="duplicate"):
        write_container(tmp_path / "x.shac", {}, [("a", b""), ("a", b"")])
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# quantize_pmf / tables
# --------------------------------------------------------------------------------------------


def _check_freqs(freqs: np.ndarray, precision: int, k: int) -> None:
    assert freqs.dtype == np.uint32 and freqs.shape == (k,)
    assert int(freqs.sum(dtype=np.uint64)) == 2**precision
    assert int(freqs.min()) >= 1


def test_quantize_pmf_random() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        k = int(rng.integers(1, 3000))
        precision = int(rng.integers(max(1, int(np.ceil(np.log2(k)))), 25))
        pmf = rng.random(k) ** rng.uniform(0.5, 8)
        freqs = quantize_pmf(pmf, precision)
        _check_freqs(freqs, precision, k)
        np.testing.assert_array_equal(freqs, quantize_pmf(pmf, precision))  # deterministic


def test_quantize_pmf_extreme() -> None:
    k = 5000
    pmf = np.full(k, 1e-12 / (k - 1))
    pmf[17] = 1 - 1e-12
    for precision in (13, 16, 24):
        freqs = quantize_pmf(pmf, precision)
        _check_freqs(freqs, precision, k)
        assert freqs[17] == 2**precision - (k - 1)
    full = quantize_pmf(np.r_[1.0, np.zeros(2**12 - 1)], 12)  # K == 2**precision: all ones
    _check_freqs(full, 12, 2**12)
    assert (full == 1).all()
    _check_freqs(quantize_pmf(np.array([3.0]), 8), 8, 1)
    tiny = quantize_pmf(np.array([1e-300, 1e-300, 2e-300]), 4)
    np.testing.assert_array_equal(tiny, [4, 4, 8])


def test_quantize_pmf_is_close_to_optimal() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        k = int(rng.integers(2, 512))
        p = rng.dirichlet(np.full(k, 0.3))
        q = quantize_pmf(p, 16) / 2**16
        entropy = -np.sum(p[p > 0] * np.log2(p[p > 0]))
        cross = -np.sum(p * np.log2(q))
        assert cross - entropy < 0.002 + 0.5 * k / 2**16


def test_quantize_pmf_errors() -> None:
    with pytest.raises(ValueError, match="more than 2\\*\\*4"):
        quantize_pmf(np.ones(17), 4)
    for bad in (np.array([]), np.array([0.0, 0.0]), np.array([1.0, -1.0]), np.array([np.nan, 1.0]), np.ones((2, 2))):
        with pytest.raises(ValueError):
            quantize_pmf(bad, 8)
    for precision in (0, 25):
        with pytest.raises(ValueError, match="precision"):
            quantize_pmf(np.ones(2), precision)


def test_integer_table_validation_and_packing() -> None:
    t = _skewed_table(100, 5.0, offset=-50, precision=14)
    assert t.support == (-50, 50) and t.num_symbols == 100
    assert not t.freqs.flags.writeable
    assert unpack_table(pack_table(t)) == t
    assert hash(unpack_table(pack_table(t))) == hash(t)
    assert len(pack_table(t)) == 8 + 1 + 4 + 4 * 100
    with pytest.raises(ValueError, match="sum to"):
        IntegerTable(0, np.array([1, 2, 3]), 4)
    with pytest.raises(ValueError, match="zero frequency"):
        IntegerTable(0, np.array([0, 16]), 4)
    with pytest.raises(ValueError, match="precision"):
        IntegerTable(0, np.array([2**25]), 25)
    raw = bytearray(pack_table(t))
    raw[-4:] = struct.pack("<I", int(t.freqs[-1]) + 1)
    with pytest.raises(ValueError, match="sum to"):
        unpack_table(bytes(raw))
    raw = bytearray(pack_table(IntegerTable(0, np.array([15, 1]), 4)))
    raw[-4:] = struct.pack("<I", 0)
    raw[-8:-4] = struct.pack("<I", 16)
    with pytest.raises(ContainerError, match="zero frequency"):
        unpack_table(bytes(raw))
    with pytest.raises(ContainerError, match="expected"):
        unpack_table(pack_table(t)[:-1])
    with pytest.raises(ContainerError, match="too short"):
        unpack_table(b"\x00" * 5)


# --------------------------------------------------------------------------------------------
# coder
# --------------------------------------------------------------------------------------------


def test_round_trip_million_symbols_two_streams() -> None:
    rng = np.random.default_rng(11)
    t0 = _skewed_table(256, 6.0, offset=-128)
    t1 = IntegerTable.from_pmf(rng.random(7) + 0.1, offset=1000, precision=20)
    p0 = t0.freqs / 2**16
    v0 = rng.choice(256, size=700_000, p=p0) - 128
    v1 = (rng.integers(0, 7, size=300_000) + 1000).astype(np.int32)
    t_start = time.perf_counter()
    data = encode_symbols([(v0, t0), (v1.reshape(1000, 300), t1)])
    t_enc = time.perf_counter() - t_start
    assert len(data) % 4 == 0
    t_start = time.perf_counter()
    d0, d1 = decode_symbols(data, [(v0.size, t0), (v1.size, t1)])
    t_dec = time.perf_counter() - t_start
    assert d0.dtype == np.int64 and d1.dtype == np.int64
    np.testing.assert_array_equal(d0, v0)
    np.testing.assert_array_equal(d1, v1)
    assert encode_symbols([(v0, t0), (v1, t1)]) == data  # deterministic
    print(f"\n1e6 symbols: encode {1e6 / t_enc / 1e6:.1f} M/s, decode {1e6 / t_dec / 1e6:.1f} M/s", file=sys.stderr)


def test_coded_size_is_near_shannon_bound() -> None:
    rng = np.random.default_rng(12)
    pmf = np.array([0.7, 0.15, 0.08, 0.04, 0.02, 0.01])
    t = IntegerTable.from_pmf(pmf, offset=-2, precision=16)
    values = rng.choice(6, size=200_000, p=t.freqs / 2**16) - 2
    bound = table_bits(values, t)
    coded_bits = 8 * len(encode_symbols([(values, t)]))
    assert bound <= coded_bits <= 1.01 * bound
    # the bound itself matches the definition
    expected = float(np.sum(16 - np.log2(t.freqs[values + 2].astype(np.float64))))
    assert bound == pytest.approx(expected, rel=1e-12)


def test_empirical_table_round_trip() -> None:
    rng = np.random.default_rng(13)
    values = np.round(rng.laplace(0, 2.0, 50_000)).astype(np.int16)
    t = empirical_table(values, precision=16)
    assert t.support == (int(values.min()), int(values.max()) + 1)
    (out,) = decode_symbols(encode_symbols([(values, t)]), [(values.size, t)])
    np.testing.assert_array_equal(out, values)


def test_out_of_range_symbol_is_named() -> None:
    t = _skewed_table(10, offset=5)
    with pytest.raises(ValueError, match=r"stream 1: value 15 at index 2 is outside the table support \[5, 15\)"):
        encode_symbols([(np.array([5, 6]), t), (np.array([5, 14, 15, 99]), t)])
    with pytest.raises(ValueError, match="value -3 at index 0"):
        encode_symbols([(np.array([-3]), t)])
    with pytest.raises(ValueError, match="does not fit in int64"):
        encode_symbols([(np.array([2**64 - 1], dtype=np.uint64), t)])
    with pytest.raises(TypeError, match="integer array"):
        encode_symbols([(np.array([5.0]), t)])
    with pytest.raises(ValueError, match="outside the table support"):
        table_bits(np.array([4]), t)


def test_degenerate_streams() -> None:
    single = IntegerTable(offset=-7, freqs=np.array([2**16]), precision=16)
    t = _skewed_table(4)
    assert encode_symbols([]) == b""
    assert encode_symbols([(np.full(1000, -7), single)]) == b""
    assert decode_symbols(b"", [(1000, single)])[0].tolist() == [-7] * 1000
    data = encode_symbols([(np.array([], dtype=np.int64), t), (np.full(5, -7), single), (np.array([0, 3, 1]), t)])
    a, b, c = decode_symbols(data, [(0, t), (5, single), (3, t)])
    assert a.size == 0 and b.tolist() == [-7] * 5 and c.tolist() == [0, 3, 1]
    assert table_bits(np.full(10, -7), single) == 0.0


def test_decode_rejects_bad_lengths_and_counts() -> None:
    t = _skewed_table(16)
    data = encode_symbols([(np.arange(16), t)])
    with pytest.raises(ContainerError, match="not a multiple of 4"):
        decode_symbols(data[:-1], [(16, t)])
    with pytest.raises(ContainerError, match="empty but 16 symbols were expected"):
        decode_symbols(b"", [(16, t)])
    with pytest.raises(ContainerError, match="unexpected bytes"):
        decode_symbols(data, [(0, t)])
    with pytest.raises(ContainerError, match="negative symbol count"):
        decode_symbols(data, [(-1, t)])
    with pytest.raises(ContainerError, match="not fully consumed"):
        decode_symbols(data + data, [(16, t)])


def test_decoding_garbage_never_hangs_or_crashes() -> None:
    rng = np.random.default_rng(14)
    tables = [_skewed_table(64, 3.0), _skewed_table(3, 1.0, precision=8), IntegerTable.from_pmf(np.ones(1000), 0, 24)]
    outcomes = {"raised": 0, "returned": 0}
    for trial in range(300):
        n_words = int(rng.integers(1, 64))
        garbage = rng.integers(0, 2**32, size=n_words, dtype=np.uint32).astype("<u4").tobytes()
        specs = [(int(rng.integers(0, 2000)), tables[trial % 3]), (int(rng.integers(1, 500)), tables[(trial + 1) % 3])]
        try:
            out = decode_symbols(garbage, specs)
        except ContainerError as exc:
            assert "\n" not in str(exc)
            outcomes["raised"] += 1
            continue
        outcomes["returned"] += 1
        for arr, (count, table) in zip(out, specs, strict=True):
            lo, hi = table.support
            assert arr.shape == (count,) and (arr >= lo).all() and (arr < hi).all()
    assert outcomes["raised"] + outcomes["returned"] == 300


def test_golden_bitstream() -> None:
    """Pins the exact bytes: fails if a constriction upgrade changed the bitstream (files would not decode)."""
    t = IntegerTable(offset=-2, freqs=np.array([1000, 30000, 30000, 4535, 1]), precision=16)
    values = np.array([0, 1, -1, 0, 2, 2, -2, 1, 0, 0, 2, -1, 0, 1, 0, 0])
    data = encode_symbols([(values, t), (values[::-1], t)])
    assert data.hex() == GOLDEN_HEX
    np.testing.assert_array_equal(decode_symbols(bytes.fromhex(GOLDEN_HEX), [(16, t), (16, t)])[1], values[::-1])


GOLDEN_HEX = "f8c8bfe95f7307d5350177c845fd099a3c2bec99"


def test_header_json_is_compact_utf8() -> None:
    header, _, data = _small_container()
    header_len = struct.unpack_from("<I", data, 12)[0]
    blob = zlib.decompress(data[16 : 16 + header_len])  # version 2: deflated compact UTF-8 JSON
    assert json.loads(blob.decode("utf-8")) == header
    assert "héllo".encode() in blob
