"""The hash-grid lookup at fixed points as a sparse matrix equals the gather path, in value and gradient.

Whole-image image fits (``fit_image`` and the batched fitter) train through ``InterpolationMatrix``; if it drifted
from ``hash_grid_interpolate`` the file would decode to a different field than the one trained."""

from __future__ import annotations

import pytest
import torch

from shacira_nerf.core.hash_grid import GridGeometry, hash_grid_interpolate
from shacira_nerf.core.interpolation_matrix import InterpolationMatrix


@pytest.mark.parametrize(
    "dim, levels, log2_size",
    [(2, 6, 6), (2, 8, 12), (3, 4, 7)],  # 2^6 / 2^7 rows: many hash collisions and merged corners
)
def test_matrix_lookup_equals_the_gather(dim: int, levels: int, log2_size: int) -> None:
    generator = torch.Generator().manual_seed(dim * 100 + levels)
    geometry = GridGeometry(dim, levels, 4, 64, log2_size)
    x = torch.rand(700, dim, generator=generator)
    x[:5] = 0.0  # edges of the domain: corners on the last vertex
    x[5:10] = 1.0
    table = torch.randn(geometry.offsets[-1], 2, generator=generator, requires_grad=True)
    reference = hash_grid_interpolate(table, x, geometry)
    matrix = InterpolationMatrix(x, geometry)
    out = matrix.apply(table)
    assert out.shape == reference.shape
    assert torch.allclose(out, reference, atol=1e-6)
    upstream = torch.randn(reference.shape, generator=generator)
    (grad_reference,) = torch.autograd.grad(reference, table, upstream)
    (grad_matrix,) = torch.autograd.grad(out, table, upstream)
    assert torch.allclose(grad_matrix, grad_reference, atol=1e-5)


def test_matrix_lookup_rejects_a_table_of_another_grid() -> None:
    geometry = GridGeometry(2, 4, 4, 32, 8)
    matrix = InterpolationMatrix(torch.rand(10, 2), geometry)
    with pytest.raises(ValueError, match="rows"):
        matrix.apply(torch.zeros(geometry.offsets[-1] + 1, 1))
