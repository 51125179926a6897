"""Multi-resolution hash lookup and interpolation over a (decoded) feature table, in pure torch.

The geometry follows Instant-NGP / tiny-cuda-nn conventions, so that a tiny-cuda-nn fast path can read the same
table: level ``l`` has scale ``min_res * b**l - 1`` with ``b`` the per-level growth, resolution ``ceil(scale) + 1``,
and a table of ``min(2**log2_hashmap_size, next_multiple_of_8(resolution**dim))`` rows. Coarse levels whose grid fits
are indexed densely (no collisions, and fewer rows: fewer latents to code); finer ones are hashed with the usual
XOR-of-primes hash. A point ``x`` in [0, 1]^dim is looked up at ``x * scale + 0.5`` and interpolated (d-linear) from
the ``2**dim`` surrounding rows.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import List, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

PRIMES: Tuple[int, ...] = (1, 2654435761, 805459861, 3674653429)
"""Per-axis hash primes (Teschner et al., as in Instant-NGP)."""


@dataclass(frozen=True)
class GridGeometry:
    """Levels, resolutions and table sizes of a multi-resolution hash grid.

    Args:
        dim: spatial dimension of the inputs (2 for images, 3 for scenes).
        num_levels: number of resolution levels.
        min_res: resolution of the coarsest level.
        max_res: resolution of the finest level.
        log2_hashmap_size: log2 of the largest table (the hash table size of the fine levels).
    """

    dim: int
    num_levels: int
    min_res: int
    max_res: int
    log2_hashmap_size: int

    def __post_init__(self) -> None:
        if self.dim not in (2, 3):
            raise ValueError(f"grid dimension must be 2 or 3, got {self.dim}")
        if self.num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {self.num_levels}")
        if not 1 <= self.min_res <= self.max_res:
            raise ValueError(f"need 1 <= min_res <= max_res, got {self.min_res}, {self.max_res}")
        if not 4 <= self.log2_hashmap_size <= 26:
            raise ValueError(f"log2_hashmap_size must be in [4, 26], got {self.log2_hashmap_size}")

    @property
    def growth(self) -> float:
        """Per-level scale factor b."""
        if self.num_levels == 1:
            return 1.0
        return math.exp((math.log(self.max_res) - math.log(self.min_res)) / (self.num_levels - 1))

    @property
    def scales(self) -> List[float]:
        """Continuous scale of each level (the grid spacing is 1 / scale)."""
        return [self.min_res * self.growth**level - 1.0 for level in range(self.num_levels)]

    @property
    def resolutions(self) -> List[int]:
        """Vertices per axis at each level."""
        return [int(math.ceil(s)) + 1 for s in self.scales]

    @property
    def level_sizes(self) -> List[int]:
        """Table rows at each level: dense where the grid fits into the hash table, else the hash table size."""
        cap = 2**self.log2_hashmap_size
        return [min(cap, _round_up(r**self.dim, 8)) for r in self.resolutions]

    @property
    def dense(self) -> List[bool]:
        """Whether each level is indexed densely (collision-free) rather than hashed."""
        return [r**self.dim <= size for r, size in zip(self.resolutions, self.level_sizes)]

    @property
    def offsets(self) -> List[int]:
        """Start row of each level in the flat table, plus the total at the end."""
        out = [0]
        for size in self.level_sizes:
            out.append(out[-1] + size)
        return out

    def to_dict(self) -> dict:
        """Plain values for file headers."""
        return {
            "dim": self.dim,
            "num_levels": self.num_levels,
            "min_res": self.min_res,
            "max_res": self.max_res,
            "log2_hashmap_size": self.log2_hashmap_size,
        }


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


@functools.lru_cache(maxsize=64)
def _level_constants(geometry: GridGeometry, device: torch.device) -> Tuple[Tensor, ...]:
    """Per-level scales, resolutions, sizes, offsets and dense flags on ``device``, made once per geometry.

    Why cached: making them copies host lists to the device, which a CUDA graph capture refuses. The Triton lookup's
    gradient in the points (the camera optimizer's path) runs this reference inside the captured backward; its warmup
    fills the cache, so the capture reads device tensors only. Callers never write to them.
    """
    scales = torch.tensor(geometry.scales, dtype=torch.float32, device=device)
    res = torch.tensor(geometry.resolutions, dtype=torch.int64, device=device)
    sizes = torch.tensor(geometry.level_sizes, dtype=torch.int64, device=device)
    offsets = torch.tensor(geometry.offsets[:-1], dtype=torch.int64, device=device)
    dense = torch.tensor(geometry.dense, dtype=torch.bool, device=device)
    return scales, res, sizes, offsets, dense


def _outer(parts: List[Tensor]) -> Tensor:
    """Combine per-axis pairs [n, L, 2] into all 2**dim corners [n, L, 2**dim] (axis 0 varies slowest)."""
    out = parts[0]
    for p in parts[1:]:
        out = (out.unsqueeze(-1) * p.unsqueeze(-2)).flatten(-2)
    return out


def _outer_combine(parts: List[Tensor], op) -> Tensor:  # noqa: ANN001 - a binary torch op
    out = parts[0]
    for p in parts[1:]:
        out = op(out.unsqueeze(-1), p.unsqueeze(-2)).flatten(-2)
    return out


def corner_indices_and_weights(
    x: Float[Tensor, "n dim"], geometry: GridGeometry
) -> Tuple[Tensor, Float[Tensor, "n levels corners"]]:
    """Flat-table row of every corner around every point at every level, and its d-linear weight.

    Returns ``(rows [n, levels, 2**dim] int64, weights [n, levels, 2**dim] float32)``; corner ``c`` has offset bit
    ``(c >> (dim - 1 - d)) & 1`` along axis ``d``.
    """
    dim = geometry.dim
    scales, res, sizes, offsets, dense = _level_constants(geometry, x.device)
    pos = x.float().unsqueeze(1) * scales[None, :, None] + 0.5  # [n, L, dim]
    base_f = torch.floor(pos)
    frac = pos - base_f
    base = base_f.long()
    lo_hi = torch.stack([base, base + 1], dim=-1)  # [n, L, dim, 2]
    weights = _outer([torch.stack([1.0 - frac[..., d], frac[..., d]], dim=-1) for d in range(dim)])
    # Dense index: sum_d coord_d * res**d; hashed index: XOR_d coord_d * prime_d. Products stay far below 2**63,
    # and the low bits (all that the power-of-two modulo keeps) equal tiny-cuda-nn's uint32 arithmetic.
    dense_index = _outer_combine([lo_hi[..., d, :] * (res[None, :, None] ** d) for d in range(dim)], torch.add)
    hashed = _outer_combine([lo_hi[..., d, :] * PRIMES[d] for d in range(dim)], torch.bitwise_xor)
    index = torch.where(dense[None, :, None], dense_index, hashed)
    rows = torch.remainder(index, sizes[None, :, None]) + offsets[None, :, None]
    return rows, weights


def hash_grid_interpolate(
    table: Float[Tensor, "rows channels"], x: Float[Tensor, "n dim"], geometry: GridGeometry
) -> Float[Tensor, "n levels channels"]:
    """d-linear interpolation of a flat per-level table at points ``x`` in [0, 1]^dim, per level.

    Pure-torch reference path: any device, differentiable in ``table`` (``index_select``'s backward is an
    index_add, several times faster on CPU than the index_put that fancy indexing would produce).
    """
    if table.shape[0] != geometry.offsets[-1]:
        raise ValueError(f"table has {table.shape[0]} rows, geometry needs {geometry.offsets[-1]}")
    rows, weights = corner_indices_and_weights(x, geometry)
    flat = rows.reshape(-1)
    weights = weights.to(table.dtype)
    # One gather per channel: on CPU this beats gathering whole rows and a batched matmul by ~1.5x.
    channels = [
        (torch.index_select(table[:, k], 0, flat).view_as(weights) * weights).sum(-1) for k in range(table.shape[1])
    ]
    return torch.stack(channels, dim=-1)


def hash_grid_lookup(
    table: Float[Tensor, "rows features"], x: Float[Tensor, "n dim"], geometry: GridGeometry
) -> Float[Tensor, "n levels_times_features"]:
    """Interpolated features of points ``x`` from a flat feature table, levels concatenated (coarse first)."""
    return hash_grid_interpolate(table, x, geometry).reshape(x.shape[0], -1)
