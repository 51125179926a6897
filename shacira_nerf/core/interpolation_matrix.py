"""The hash-grid lookup at fixed points as a sparse matrix: interpolated latents = A @ table.

Why: an image is fitted at the same pixel centres at every step, so the corner rows and d-linear weights of every
pixel and level never change and the lookup is one fixed linear map from table rows to (pixel, level) values. Stored
as a sparse matrix (CSR) with its transpose beside it, the forward pass is a sparse-dense multiply and the backward
pass the transposed multiply, instead of a gather whose backward is an atomic scatter-add: hundreds of thousands of
pixels share each of a few thousand rows, and atomics on them serialise (and make CUDA results run-dependent). One
multiply also serves many fits at once when they share the grid geometry: their tables are columns of one dense
operand (``shacira_nerf.image.pixel_lookup``).

Same numbers as ``hash_grid_interpolate`` up to float summation order: a point's corners that fall on one row (a hash
collision, or the edge of a level) are merged into one entry with the summed weight.
"""

from __future__ import annotations

import warnings
from typing import Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from shacira_nerf.core.hash_grid import GridGeometry, corner_indices_and_weights


class _SparseApply(torch.autograd.Function):
    """``forward_matrix @ table`` whose gradient in ``table`` is ``backward_matrix @ grad`` (the precomputed
    transpose: CSR @ dense both ways, no atomics)."""

    @staticmethod
    def forward(ctx, table: Tensor, forward_matrix: Tensor, backward_matrix: Tensor) -> Tensor:  # noqa: ANN001
        ctx.backward_matrix = backward_matrix
        return torch.sparse.mm(forward_matrix, table)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Tensor, None, None]:  # noqa: ANN001
        return torch.sparse.mm(ctx.backward_matrix, grad.contiguous()), None, None


class InterpolationMatrix:
    """The lookup of the points ``x`` in a grid of ``geometry`` as a sparse [points x levels, table rows] matrix.

    Args:
        x: the fixed query points in [0, 1]^dim (for an image: ``pixel_centres``).
        geometry: the grid they are looked up in.

    Memory: about 2 x (12 bytes x 2**dim corners + 8 bytes) per point and level (the matrix and its transpose),
    e.g. 1.1 GB for a 768x512 image with 24 levels.
    """

    def __init__(self, x: Float[Tensor, "n dim"], geometry: GridGeometry) -> None:
        rows, weights = corner_indices_and_weights(x, geometry)  # [n, L, C] each
        n, levels, corners = rows.shape
        self.num_points, self.num_levels = n, levels
        self.num_rows = geometry.offsets[-1]
        out_rows = torch.arange(n * levels, device=x.device).repeat_interleave(corners)
        with warnings.catch_warnings():  # torch calls its CSR support "beta"; the two operations used here are not
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            coo = torch.sparse_coo_tensor(
                torch.stack([out_rows, rows.reshape(-1)]),
                weights.reshape(-1),
                (n * levels, self.num_rows),
                check_invariants=False,  # indices are in range by construction (corner_indices_and_weights)
            ).coalesce()
            self.forward_matrix = coo.to_sparse_csr()
            self.backward_matrix = coo.t().coalesce().to_sparse_csr()

    def apply(self, table: Float[Tensor, "rows channels"]) -> Float[Tensor, "n levels channels"]:
        """Interpolated values of every table column at every point and level, differentiable in ``table``."""
        if table.shape[0] != self.num_rows:
            raise ValueError(f"table has {table.shape[0]} rows, the grid has {self.num_rows}")
        out = _SparseApply.apply(table.contiguous(), self.forward_matrix, self.backward_matrix)
        return out.view(self.num_points, self.num_levels, table.shape[1])
