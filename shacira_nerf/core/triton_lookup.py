"""Triton kernels for the multi-resolution hash lookup: d-linear interpolation forward, scatter-add backward.

The torch reference (``hash_grid.hash_grid_interpolate``) computes every corner's row and weight as [n, levels,
2**dim] int64/float32 tensors, gathers one channel at a time and sums: a dozen kernels and ~100 bytes of temporaries
per point and level, and its backward is an ``index_add`` over the same index tensor. Here one program handles a
block of points at one level and keeps all of it in registers: position, floor, hash (the same int64 arithmetic as
the reference, so the same rows), weights, the gather of every channel and the weighted sum; the backward recomputes
rows and weights and adds ``weight x grad`` into the table's gradient with atomics (as tiny-cuda-nn does).

The gradient with respect to the points (only nerfacto's ``predict_normals`` needs it) goes through the torch
reference: it is rare, and keeping one implementation of that derivative keeps it tested.

Triton ships with torch's CUDA wheels, so this compiles nothing at install time; on a CPU it runs in Triton's
interpreter (``TRITON_INTERPRET=1``), which is how CI tests it against the reference.
"""

from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl
from jaxtyping import Float
from torch import Tensor

from shacira_nerf.core.hash_grid import PRIMES, GridGeometry, hash_grid_interpolate

BLOCK_POINTS = 256
"""Points per program: enough to hide gather latency on an H200, small enough for the interpreter in tests."""


@triton.jit
def _corner_row_and_weight(
    x_ptr, offs, mask, scale, res, size, offset, dense, prime1, prime2, corner: tl.constexpr, DIM: tl.constexpr
):
    """Row in the flat table and d-linear weight of corner ``corner`` of each point (reference: corner bit
    ``(c >> (dim - 1 - d)) & 1`` along axis ``d``; dense index sum_d coord_d res**d, hashed XOR_d coord_d prime_d)."""
    weight = tl.full(offs.shape, 1.0, tl.float32)
    dense_index = tl.zeros(offs.shape, tl.int64)
    hashed = tl.zeros(offs.shape, tl.int64)
    stride = tl.full(offs.shape, 1, tl.int64)
    for d in tl.static_range(DIM):
        xd = tl.load(x_ptr + offs.to(tl.int64) * DIM + d, mask=mask, other=0.0)
        pos = xd * scale + 0.5
        base_f = tl.floor(pos)
        frac = pos - base_f
        # The corner's bit along axis d, written out: a constexpr cannot be assigned in an unrolled loop.
        coord = base_f.to(tl.int64) + ((corner >> (DIM - 1 - d)) & 1)
        if ((corner >> (DIM - 1 - d)) & 1) == 1:
            weight = weight * frac
        else:
            weight = weight * (1.0 - frac)
        dense_index = dense_index + coord * stride
        stride = stride * res
        if d == 0:
            hashed = coord * 1
        elif d == 1:
            hashed = hashed ^ (coord * prime1)
        else:
            hashed = hashed ^ (coord * prime2)
    index = tl.where(dense, dense_index, hashed)
    row = index % size
    row = tl.where(row < 0, row + size, row) + offset  # torch.remainder's sign convention
    return row, weight


@triton.jit
def _block_of_level(scales_ptr, res_ptr, sizes_ptr, offsets_ptr, dense_ptr, n, num_levels, C: tl.constexpr,
                    CP: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    """This program's points, their mask, the level's constants, and where each (point, channel) of the level sits
    in the [n, levels, C] output."""
    level = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    ch = tl.arange(0, CP)
    m = mask[:, None] & (ch < C)[None, :]
    out_offs = offs.to(tl.int64)[:, None] * (num_levels * C) + level * C + ch[None, :]
    scale = tl.load(scales_ptr + level)
    res = tl.load(res_ptr + level)
    size = tl.load(sizes_ptr + level)
    offset = tl.load(offsets_ptr + level)
    dense = tl.load(dense_ptr + level) != 0
    return offs, mask, ch, m, out_offs, scale, res, size, offset, dense


@triton.jit
def _interpolate_forward_kernel(
    x_ptr, table_ptr, out_ptr, scales_ptr, res_ptr, sizes_ptr, offsets_ptr, dense_ptr, n, num_levels, prime1, prime2,
    C: tl.constexpr, CP: tl.constexpr, DIM: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    offs, mask, ch, m, out_offs, scale, res, size, offset, dense = _block_of_level(
        scales_ptr, res_ptr, sizes_ptr, offsets_ptr, dense_ptr, n, num_levels, C, CP, BLOCK
    )
    acc = tl.zeros((BLOCK, CP), tl.float32)
    for corner in tl.static_range(2**DIM):
        row, weight = _corner_row_and_weight(
            x_ptr, offs, mask, scale, res, size, offset, dense, prime1, prime2, corner, DIM
        )
        values = tl.load(table_ptr + row[:, None] * C + ch[None, :], mask=m, other=0.0)
        acc += values * weight[:, None]
    tl.store(out_ptr + out_offs, acc, mask=m)


@triton.jit
def _interpolate_backward_kernel(
    x_ptr, grad_out_ptr, grad_table_ptr, scales_ptr, res_ptr, sizes_ptr, offsets_ptr, dense_ptr, n, num_levels, prime1, prime2,
    C: tl.constexpr, CP: tl.constexpr, DIM: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    offs, mask, ch, m, g_offs, scale, res, size, offset, dense = _block_of_level(
        scales_ptr, res_ptr, sizes_ptr, offsets_ptr, dense_ptr, n, num_levels, C, CP, BLOCK
    )
    grad = tl.load(grad_out_ptr + g_offs, mask=m, other=0.0)
    # Adding 0 changes nothing: skip it. nerfacto zeroes the density of samples outside the scene box, and with the
    # Blender flags those are all moved to one point, so millions of zero gradients would contend for eight rows.
    m = m & (grad != 0.0)
    for corner in tl.static_range(2**DIM):
        row, weight = _corner_row_and_weight(
            x_ptr, offs, mask, scale, res, size, offset, dense, prime1, prime2, corner, DIM
        )
        tl.atomic_add(grad_table_ptr + row[:, None] * C + ch[None, :], grad * weight[:, None], mask=m)


class _LevelConstants:
    """Per-level scale, resolution, table size, offset and dense flag on one device (built once per device)."""

    def __init__(self, geometry: GridGeometry, device: torch.device) -> None:
        self.device = device
        self.scales = torch.tensor(geometry.scales, dtype=torch.float32, device=device)
        self.res = torch.tensor(geometry.resolutions, dtype=torch.int64, device=device)
        self.sizes = torch.tensor(geometry.level_sizes, dtype=torch.int64, device=device)
        self.offsets = torch.tensor(geometry.offsets[:-1], dtype=torch.int64, device=device)
        self.dense = torch.tensor(geometry.dense, dtype=torch.int8, device=device)

    def args(self) -> Tuple[Tensor, ...]:
        return self.scales, self.res, self.sizes, self.offsets, self.dense


def _launch_grid(n: int, num_levels: int) -> Tuple[int, int]:
    return (triton.cdiv(max(n, 1), BLOCK_POINTS), num_levels)


class _TritonInterpolate(torch.autograd.Function):
    """``hash_grid_interpolate`` with Triton kernels; differentiable in the table (kernels) and the points
    (through the torch reference)."""

    @staticmethod
    def forward(ctx, table: Tensor, x: Tensor, geometry: GridGeometry, constants: _LevelConstants) -> Tensor:  # noqa: ANN001
        n, channels = x.shape[0], table.shape[1]
        out = torch.empty(n, geometry.num_levels, channels, device=x.device, dtype=torch.float32)
        if n > 0:
            _interpolate_forward_kernel[_launch_grid(n, geometry.num_levels)](
                x, table, out, *constants.args(), n, geometry.num_levels, PRIMES[1], PRIMES[2],
                C=channels, CP=triton.next_power_of_2(channels), DIM=geometry.dim, BLOCK=BLOCK_POINTS,
            )  # fmt: skip
        ctx.save_for_backward(table, x)
        ctx.geometry, ctx.constants = geometry, constants
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: ANN001, ANN205
        table, x = ctx.saved_tensors
        geometry = ctx.geometry
        grad_table = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_table = torch.zeros(table.shape, device=table.device, dtype=torch.float32)
            n = x.shape[0]
            if n > 0:
                _interpolate_backward_kernel[_launch_grid(n, geometry.num_levels)](
                    x, grad_out.float().contiguous(), grad_table, *ctx.constants.args(), n, geometry.num_levels, PRIMES[1], PRIMES[2],
                    C=table.shape[1], CP=triton.next_power_of_2(table.shape[1]), DIM=geometry.dim,
                    BLOCK=BLOCK_POINTS,
                )  # fmt: skip
            grad_table = grad_table.to(table.dtype)
        if ctx.needs_input_grad[1]:
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                ref = hash_grid_interpolate(table.detach(), xr, geometry)
                (grad_x,) = torch.autograd.grad(ref, xr, grad_out)
        return grad_table, grad_x, None, None


class TritonInterpolator:
    """The Triton lookup for one geometry; level constants are cached per device."""

    def __init__(self, geometry: GridGeometry) -> None:
        if geometry.dim not in (2, 3) or len(PRIMES) < geometry.dim:
            raise ValueError(f"the Triton lookup supports 2D and 3D grids, got dim {geometry.dim}")
        self.geometry = geometry
        self._constants: dict = {}

    def __call__(
        self, table: Float[Tensor, "rows channels"], x: Float[Tensor, "n dim"]
    ) -> Float[Tensor, "n levels channels"]:
        if table.shape[0] != self.geometry.offsets[-1]:
            raise ValueError(f"table has {table.shape[0]} rows, geometry needs {self.geometry.offsets[-1]}")
        if x.shape[-1] != self.geometry.dim:
            raise ValueError(f"points have {x.shape[-1]} coordinates, the grid is {self.geometry.dim}D")
        key = x.device
        if key not in self._constants:
            self._constants[key] = _LevelConstants(self.geometry, x.device)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return _TritonInterpolate.apply(
                table.float().contiguous(), x.float().contiguous(), self.geometry, self._constants[key]
            )
