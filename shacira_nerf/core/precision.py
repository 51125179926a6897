"""Network precision: how a file stores the float networks (latent decoders, MLPs), shared by scenes and images.

Training rounds the networks to their storage precision once it ends (``round_to_precision_``), so the weights that
were evaluated are exactly the weights the file holds; a tensor that precision does not hold exactly (not rounded,
or beyond float16's range) is stored as float32 instead (``storage_array``), so a file always decodes bit-exactly to
the model that wrote it.

"int8" stores a tensor as int8 values in -127..127 and one float32 scale, decoded as ``values * scale``
(``codec.dequantize_int8``). The entropy models are not networks the file stores (their coding tables are integer
already, ``stored_network_tensors``), so int8 covers every tensor the file does store: MLP weights and biases, the
latent decoders and the mean appearance embedding, except those int8 cannot save bytes on or cannot hold (below).
"""

from __future__ import annotations

from typing import Iterable, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from shacira_nerf.codec import INT8_LEVELS, MAX_INT8_SCALE, MIN_INT8_SCALE, dequantize_int8

NETWORK_PRECISIONS: Tuple[str, ...] = ("float16", "float32", "int8")
"""Storage precisions of network weights, by the name configs use."""
_FLOAT_DTYPES = {"float16": torch.float16, "float32": torch.float32}
SCALE_BYTES = 4
"""Bytes of an int8 tensor's scale (float32): int8 saves ``numel - 4`` bytes over float16, so a tensor of at most
4 numbers (a 1- or 3-wide output bias) stays float16."""
_SCALE_FACTORS = np.linspace(0.3, 1.0, 71, dtype=np.float32)
"""Candidate scales, as fractions of max|w| / 127, that ``int8_round`` searches for the least squared error."""
_CANONICAL_ROUNDS = 8
"""Most passes ``int8_round`` makes to reach a grid that ``int8_encode`` recovers exactly (one or two in practice)."""

StoredArray = Union[np.ndarray, Tuple[np.ndarray, np.float32]]
"""A network tensor as a file stores it: a float16 or float32 array, or int8 values with their float32 scale."""


def _check_precision(precision: str) -> None:
    if precision not in NETWORK_PRECISIONS:
        raise ValueError(f"unknown network precision {precision!r} (known: {', '.join(NETWORK_PRECISIONS)})")


def _int8_values(arr: np.ndarray, scale: np.float32) -> np.ndarray:
    return np.clip(np.rint(arr / scale), -INT8_LEVELS, INT8_LEVELS).astype(np.int8)


def _peak_scale(arr: np.ndarray) -> Optional[np.float32]:
    """``max|arr| / 127`` in float32, or None where int8 cannot or need not hold ``arr``: at most ``SCALE_BYTES``
    numbers (no bytes saved), a non-finite value, or a scale outside the range a reader accepts (all zeros)."""
    if arr.size <= SCALE_BYTES or not np.isfinite(arr).all():
        return None
    scale = np.float32(np.abs(arr).max() / np.float32(INT8_LEVELS))
    return scale if MIN_INT8_SCALE <= scale <= MAX_INT8_SCALE else None


def int8_encode(arr: np.ndarray) -> Optional[Tuple[np.ndarray, np.float32]]:
    """The int8 values and scale that decode to exactly ``arr`` (float32), or None if there are none.

    The scale is read off the array: ``max|arr| / 127`` in float32, so a tensor ``int8_round`` left on its grid
    is recovered without storing anything beside it. None where int8 cannot hold the tensor exactly or saves no bytes
    (``_peak_scale``); those stay float16 or float32 (``storage_array``).
    """
    scale = _peak_scale(arr)
    if scale is None:
        return None
    values = _int8_values(arr, scale)
    return (values, scale) if np.array_equal(dequantize_int8(values, scale), arr) else None


def int8_round(arr: np.ndarray, factors: np.ndarray = _SCALE_FACTORS) -> Optional[np.ndarray]:
    """``arr`` (float32) rounded to a per-tensor int8 grid that ``int8_encode`` recovers exactly, or None.

    The scale is the one of ``factors`` x max|w| / 127 with the least squared error: clipping the few largest
    weights buys a finer grid for the rest (on the H200 lego file the render moves 1.3 dB closer to the float32 one
    than with max|w| / 127; benchmarks/README.md). The grid is then made canonical: its scale re-read as
    ``int8_encode`` reads it, until that reproduces every value.
    """
    peak = _peak_scale(arr)
    if peak is None:
        return None
    best, best_error = arr, np.inf
    for factor in factors:
        scale = np.float32(peak * factor)
        if scale < MIN_INT8_SCALE:
            continue
        candidate = dequantize_int8(_int8_values(arr, scale), scale)
        error = float(np.sum((candidate.astype(np.float64) - arr) ** 2))
        if error < best_error:
            best, best_error = candidate, error
    for _ in range(_CANONICAL_ROUNDS):
        if int8_encode(best) is not None:
            return best
        scale = _peak_scale(best)
        if scale is None:
            return None
        best = dequantize_int8(_int8_values(best, scale), scale)
    return None


@torch.no_grad()
def round_to_precision_(tensors: Iterable[Tensor], precision: str) -> None:
    """Round every tensor to ``precision`` in place. Values float16 cannot hold finitely are left as they are; with
    "int8", a tensor int8 does not cover (``int8_round`` returns None) is rounded to float16 instead."""
    _check_precision(precision)
    for tensor in tensors:
        if precision == "int8":
            rounded = int8_round(tensor.detach().float().cpu().numpy())
            if rounded is not None:
                tensor.copy_(torch.from_numpy(rounded))
                continue
        rounded = tensor.to(_FLOAT_DTYPES.get(precision, torch.float16)).to(tensor.dtype)
        tensor.copy_(torch.where(torch.isfinite(rounded), rounded, tensor))


def storage_array(tensor: Tensor, precision: str) -> StoredArray:
    """A network tensor as a file stores it: in ``precision`` if that holds it exactly (int8: values and scale,
    ``int8_encode``), else float16 if that does, else float32."""
    _check_precision(precision)
    arr = tensor.detach().float().cpu().numpy()
    if precision == "int8":
        stored = int8_encode(arr)
        if stored is not None:
            return stored
        precision = "float16"
    narrow = arr.astype(np.dtype(precision))
    return narrow if np.array_equal(narrow.astype(np.float32), arr) else arr


def stored_network_bytes(numels: Iterable[int], precision: str) -> int:
    """Bytes a file spends on network tensors of ``numels`` numbers each at ``precision`` (the payloads, not the
    sections' framing): what the size estimates count. int8: each tensor's values and scale, float16 for those of at
    most ``SCALE_BYTES`` numbers."""
    _check_precision(precision)
    if precision == "int8":
        return sum(n + SCALE_BYTES if n > SCALE_BYTES else 2 * n for n in numels)
    return sum(numels) * (2 if precision == "float16" else 4)
