"""Entropy coding of integer arrays with *stored integer* probability tables.

Why integer tables: an entropy decoder must rebuild exactly the same model the encoder used, bit
for bit.  If the decoder recomputed probabilities from floats (a learned prior evaluated with
torch, say), a different CPU/GPU, BLAS or library version could change the last ulp and silently
desynchronise the stream.  So the file stores :class:`IntegerTable` s -- integer frequencies that
sum to ``2**precision`` -- and both sides build the coder model from those integers only.

The coder is ``constriction``'s range coder (``constriction.stream.queue.RangeEncoder`` /
``RangeDecoder``) with a ``constriction.stream.model.Categorical`` model built from
``freqs / 2**precision`` in float64.  Those quotients are exact (powers-of-two denominators,
``precision <= 24``), and we use ``perfect=True``: constriction's exact optimal quantiser, which
reproduces a dyadic table at its 24-bit internal precision and is the variant constriction keeps
binary-compatible across releases.  All streams of one call share a single coder, and each stream
is coded with one batched call, so there is no per-symbol Python loop.

Tables with a single symbol cost zero bits and are not passed to the coder at all.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import constriction
import numpy as np

from .container import ContainerError

__all__ = [
    "CODER_NAME",
    "MAX_PRECISION",
    "IntegerTable",
    "decode_symbols",
    "empirical_table",
    "encode_symbols",
    "pack_table",
    "quantize_pmf",
    "table_bits",
    "unpack_table",
]

#: Identifies the bitstream flavour; worth recording in a file header next to the coded data.
CODER_NAME = "constriction-range-categorical-perfect"
#: constriction's default range coder works with 24-bit probabilities.
MAX_PRECISION = 24

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_TABLE_HEAD = struct.Struct("<qBI")  # offset, precision, K


def _table_problem(offset: Any, freqs: np.ndarray, precision: Any) -> str | None:
    """Return a description of what is wrong with a table, or None if it is valid."""
    if not isinstance(precision, (int, np.integer)) or not 1 <= int(precision) <= MAX_PRECISION:
        return f"table precision must be an integer in [1, {MAX_PRECISION}], got {precision!r}"
    if not isinstance(offset, (int, np.integer)) or not _I64_MIN <= int(offset) <= _I64_MAX:
        return f"table offset must be a 64-bit integer, got {offset!r}"
    if freqs.ndim != 1 or freqs.size == 0:
        return f"table freqs must be a non-empty 1-d array, got shape {freqs.shape}"
    k = int(freqs.size)
    if k > 2 ** int(precision):
        return f"table has {k} symbols, more than 2**{precision}"
    if int(offset) + k - 1 > _I64_MAX:
        return "table support exceeds the 64-bit integer range"
    if int(freqs.min()) < 1:
        return "table has a zero frequency (every symbol needs freq >= 1)"
    total = int(freqs.sum(dtype=np.uint64))
    if total != 2 ** int(precision):
        return f"table frequencies sum to {total}, expected 2**{precision} = {2 ** int(precision)}"
    return None


@dataclass(frozen=True, eq=False)
class IntegerTable:
    """Quantised PMF over the integer support ``[offset, offset + K)``.

    ``freqs`` is a read-only uint32 array of shape ``[K]``, each ``>= 1``, summing to
    ``2**precision``.  This is exactly what files store.
    """

    offset: int
    freqs: np.ndarray
    precision: int = 16

    def __post_init__(self) -> None:
        raw = np.asarray(self.freqs)
        if raw.dtype.kind not in "iu":
            raise ValueError(f"table freqs must be integers, got dtype {raw.dtype}")
        if raw.size and (int(raw.min()) < 0 or int(raw.max()) > 2**32 - 1):
            raise ValueError("table freqs must fit in uint32")
        freqs = np.array(raw, dtype=np.uint32, copy=True)
        problem = _table_problem(self.offset, freqs, self.precision)
        if problem:
            raise ValueError(problem)
        freqs.setflags(write=False)
        object.__setattr__(self, "freqs", freqs)
        object.__setattr__(self, "offset", int(self.offset))
        object.__setattr__(self, "precision", int(self.precision))

    @property
    def num_symbols(self) -> int:
        return int(self.freqs.size)

    @property
    def support(self) -> tuple[int, int]:
        """Half-open support ``(lo, hi)``."""
        return self.offset, self.offset + self.num_symbols

    @classmethod
    def from_pmf(cls, pmf: np.ndarray, offset: int = 0, precision: int = 16) -> IntegerTable:
        return cls(offset=offset, freqs=quantize_pmf(pmf, precision), precision=precision)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IntegerTable):
            return NotImplemented
        return (
            self.offset == other.offset
            and self.precision == other.precision
            and np.array_equal(self.freqs, other.freqs)
        )

    def __hash__(self) -> int:
        return hash((self.offset, self.precision, self.freqs.tobytes()))

    def __repr__(self) -> str:
        lo, hi = self.support
        return f"IntegerTable(support=[{lo}, {hi}), precision={self.precision})"


def quantize_pmf(pmf: np.ndarray, precision: int = 16) -> np.ndarray:
    """Turn non-negative weights into uint32 frequencies ``>= 1`` summing exactly to ``2**precision``.

    Deterministic (float64, index tie-breaking) and close to cross-entropy optimal: start from
    ``max(1, floor(p * T))``; if that undershoots, add one to the symbols that gain the most
    cross-entropy (``p * log(1 + 1/f)``); if the minimum-1 clamps overshoot, take the excess from
    the larger symbols in proportion to ``f - 1`` (where the marginal loss is ~ uniform), and the
    integer remainder from those losing the least.
    """
    if not isinstance(precision, (int, np.integer)) or not 1 <= int(precision) <= MAX_PRECISION:
        raise ValueError(f"precision must be an integer in [1, {MAX_PRECISION}], got {precision!r}")
    total = 2 ** int(precision)
    p = np.asarray(pmf, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"pmf must be a non-empty 1-d array, got shape {p.shape}")
    k = int(p.size)
    if k > total:
        raise ValueError(f"pmf has {k} symbols, more than 2**{precision} = {total}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("pmf must be finite and non-negative")
    mass = float(p.sum())
    if not mass > 0 or not np.isfinite(mass):
        raise ValueError("pmf must have a positive, finite sum")
    p = p / mass
    freqs = np.maximum(np.floor(p * total), 1.0).astype(np.int64)
    index = np.arange(k)
    rem = total - int(freqs.sum())
    if rem > 0:
        # rem < K here (each floor loses less than one unit); one increment per chosen symbol.
        gain = p * np.log1p(1.0 / freqs)
        order = np.lexsort((index, -gain))
        freqs[order[:rem]] += 1
    elif rem < 0:
        excess = -rem
        spare = freqs - 1
        spare_total = int(spare.sum())  # >= excess because K <= total
        take = (spare * excess) // spare_total
        freqs -= take
        left = excess - int(take.sum())
        if left:
            # Fewer than (#symbols with spare) units remain and each such symbol still has >= 2.
            cand = freqs > 1
            loss = np.where(cand, p * np.log(freqs / np.maximum(freqs - 1, 1)), np.inf)
            order = np.lexsort((index, loss))
            freqs[order[:left]] -= 1
    assert int(freqs.sum()) == total and int(freqs.min()) >= 1
    return freqs.astype(np.uint32)


def empirical_table(values: np.ndarray, precision: int = 16) -> IntegerTable:
    """Table fitted to the histogram of ``values`` over ``[min, max]`` (a convenience for coding
    data whose distribution is best described by itself; the table then has to be stored)."""
    v = _as_int64(values, "values")
    if v.size == 0:
        raise ValueError("cannot fit a table to an empty array")
    lo, hi = int(v.min()), int(v.max())
    counts = np.bincount(v - lo, minlength=hi - lo + 1).astype(np.float64)
    return IntegerTable(offset=lo, freqs=quantize_pmf(counts, precision), precision=precision)


def _as_int64(values: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(values)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{what} must be an integer array, got dtype {a.dtype}")
    a = a.reshape(-1)
    if a.dtype == np.uint64 and a.size and int(a.max()) > _I64_MAX:
        i = int(np.argmax(a > np.uint64(_I64_MAX)))
        raise ValueError(f"{what}: value {int(a[i])} at index {i} does not fit in int64")
    return a.astype(np.int64, copy=False)


def _to_symbols(values: np.ndarray, table: IntegerTable, what: str) -> np.ndarray:
    """Validate ``values`` against the table support; return zero-based int32 symbols."""
    a = _as_int64(values, what)
    lo, hi = table.support
    if a.size:
        bad = (a < lo) | (a > hi - 1)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{what}: value {int(a[i])} at index {i} is outside the table support [{lo}, {hi})")
    return (a - lo).astype(np.int32)


def _model(table: IntegerTable) -> Any:
    probs = table.freqs.astype(np.float64) / float(2**table.precision)  # exact
    return constriction.stream.model.Categorical(probs, perfect=True)


def encode_symbols(streams: Sequence[tuple[np.ndarray, IntegerTable]]) -> bytes:
    """Code several integer arrays, each with its own table, into one range-coded byte string.

    Arrays are flattened in C order.  Returns little-endian uint32 words (length a multiple of 4;
    empty if there is nothing to code).  Raises ``ValueError`` naming the first value outside its
    table's support.
    """
    encoder = constriction.stream.queue.RangeEncoder()
    for i, item in enumerate(streams):
        values, table = item
        if not isinstance(table, IntegerTable):
            raise TypeError(f"stream {i}: expected an IntegerTable, got {type(table).__name__}")
        symbols = _to_symbols(values, table, f"stream {i}")
        if symbols.size == 0 or table.num_symbols == 1:
            continue
        encoder.encode(symbols, _model(table))
    words = encoder.get_compressed()
    return np.asarray(words, dtype="<u4").tobytes()


def decode_symbols(data: bytes | bytearray | memoryview, specs: Sequence[tuple[int, IntegerTable]]) -> list[np.ndarray]:
    """Inverse of :func:`encode_symbols`: ``specs`` lists ``(count, table)`` per stream, in order.

    Returns flat int64 arrays.  Malformed data raises :class:`ContainerError` (a ``ValueError``)
    with a one-line message; decoding time is linear in the requested counts, so it cannot hang.
    Bit-level corruption is not always detectable here -- the container's checksums are the
    integrity check.
    """
    view = memoryview(data).cast("B")
    if len(view) % 4:
        raise ContainerError(f"coded symbol data is {len(view)} bytes, not a multiple of 4 (truncated or corrupted)")
    parsed: list[tuple[int, IntegerTable]] = []
    for i, item in enumerate(specs):
        count, table = item
        if not isinstance(table, IntegerTable):
            raise TypeError(f"stream {i}: expected an IntegerTable, got {type(table).__name__}")
        count = operator.index(count)
        if count < 0:
            raise ContainerError(f"stream {i}: negative symbol count {count}")
        parsed.append((count, table))
    coded = [c for c, t in parsed if c and t.num_symbols > 1]
    if not coded and len(view):
        raise ContainerError(f"coded symbol data has {len(view)} unexpected bytes (no symbols need coding)")
    if coded and not len(view):
        raise ContainerError(f"coded symbol data is empty but {sum(coded)} symbols were expected")
    words = np.frombuffer(view, dtype="<u4").astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    out: list[np.ndarray] = []
    for i, (count, table) in enumerate(parsed):
        if count == 0 or table.num_symbols == 1:
            out.append(np.full(count, table.offset, dtype=np.int64))
            continue
        try:
            symbols = np.asarray(decoder.decode(_model(table), count))
        except Exception as exc:  # constriction signals invalid data with AssertionError/ValueError
            raise ContainerError(f"coded symbol data is corrupted (stream {i}: {exc})") from exc
        except BaseException as exc:  # a Rust panic surfaces as pyo3's PanicException(BaseException)
            if type(exc).__name__ == "PanicException":
                raise ContainerError(f"coded symbol data is corrupted (stream {i})") from exc
            raise
        if symbols.shape != (count,) or (count and (int(symbols.min()) < 0 or int(symbols.max()) >= table.num_symbols)):
            raise ContainerError(f"coded symbol data is corrupted (stream {i} decoded out of range)")
        out.append(symbols.astype(np.int64) + table.offset)
    if coded and not decoder.maybe_exhausted():
        raise ContainerError("coded symbol data was not fully consumed (corrupted, or wrong counts/tables)")
    return out


def table_bits(symbols: np.ndarray, table: IntegerTable) -> float:
    """Shannon bound in bits: ``sum(-log2(freq[s] / 2**precision))`` over ``symbols``."""
    s = _to_symbols(symbols, table, "symbols")
    if s.size == 0:
        return 0.0
    counts = np.bincount(s, minlength=table.num_symbols).astype(np.float64)
    cost = table.precision - np.log2(table.freqs.astype(np.float64))
    return float(np.dot(counts, cost))


def pack_table(t: IntegerTable) -> bytes:
    """Fixed layout: offset i64 | precision u8 | K u32 | freqs u32[K] (little-endian)."""
    return _TABLE_HEAD.pack(t.offset, t.precision, t.num_symbols) + np.asarray(t.freqs, dtype="<u4").tobytes()


def unpack_table(b: bytes | bytearray | memoryview) -> IntegerTable:
    """Inverse of :func:`pack_table`; raises :class:`ContainerError` (a ``ValueError``) if invalid."""
    view = memoryview(b).cast("B")
    if len(view) < _TABLE_HEAD.size:
        raise ContainerError(f"table payload too short ({len(view)} bytes)")
    offset, precision, k = _TABLE_HEAD.unpack_from(view, 0)
    if k == 0:
        raise ContainerError("table payload has zero symbols")
    expected = _TABLE_HEAD.size + 4 * k
    if len(view) != expected:
        raise ContainerError(f"table payload is {len(view)} bytes, expected {expected} for {k} symbols")
    freqs = np.frombuffer(view, dtype="<u4", count=k, offset=_TABLE_HEAD.size).astype(np.uint32)
    problem = _table_problem(offset, freqs, precision)
    if problem:
        raise ContainerError(problem)
    return IntegerTable(offset=offset, freqs=freqs, precision=precision)
