"""The NeRF fields on SHACIRA grids: gradients flow where nerfstudio needs them, and only there."""

from __future__ import annotations

from typing import Tuple

import torch
from nerfstudio.cameras.rays import Frustums, RaySamples
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.fields.nerfacto_field import NerfactoField

from shacira_nerf.core.quantizer import AnnealedQuantizer
from shacira_nerf.nerf.fields import ShaciraNerfactoField, make_grid


def _field() -> ShaciraNerfactoField:
    torch.manual_seed(0)
    grid = make_grid(4, 4, 32, 10, 2, 4, AnnealedQuantizer(), "torch")
    return ShaciraNerfactoField(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), num_images=2, grid=grid)


def _samples(origins_need_grad: bool = False) -> Tuple[RaySamples, torch.Tensor]:
    """Ray samples and the origins tensor they were made from (Frustums may hold a broadcast view of it)."""
    g = torch.Generator().manual_seed(1)
    rays, samples = 6, 5
    origins = (torch.rand(rays, samples, 3, generator=g) - 0.5).requires_grad_(origins_need_grad)
    directions = torch.nn.functional.normalize(torch.randn(rays, samples, 3, generator=g), dim=-1)
    starts = torch.rand(rays, samples, 1, generator=g) * 0.5
    frustums = Frustums(origins, directions, starts, starts + 0.05, torch.ones(rays, samples, 1))
    camera_indices = torch.zeros(rays, samples, 1, dtype=torch.long)
    return RaySamples(frustums=frustums, camera_indices=camera_indices), origins


def _backward(field: ShaciraNerfactoField, samples: RaySamples, forward=None) -> dict:  # noqa: ANN001
    field.train()
    field.zero_grad()
    out = (forward or field.forward)(samples)
    (out[FieldHeadNames.RGB].sum() + out[FieldHeadNames.DENSITY].sum()).backward()
    return {n: p.grad.clone() for n, p in field.named_parameters() if p.grad is not None}


def test_without_normals_the_points_gradient_is_skipped_and_parameter_gradients_are_unchanged() -> None:
    field = _field()
    samples, _ = _samples()
    gated = _backward(field, samples)
    # nerfacto's sample positions require a gradient (for normals), and nothing reads it here: not computed.
    assert field._sample_locations.requires_grad and field._sample_locations.grad is None
    full = _backward(field, samples, forward=lambda s: NerfactoField.forward(field, s))  # nerfstudio's own forward
    assert field._sample_locations.grad is not None and field._sample_locations.grad.abs().sum() > 0
    assert gated.keys() == full.keys() and "mlp_base.0.latents.values" in gated
    for name in full:
        torch.testing.assert_close(gated[name], full[name], rtol=1e-5, atol=1e-7, msg=name)


def test_a_gradient_into_the_rays_still_reaches_them() -> None:
    """The camera optimizer's poses move the rays: their gradient goes through the grid's points."""
    field = _field()
    samples, origins = _samples(origins_need_grad=True)
    _backward(field, samples)
    assert origins.grad is not None and origins.grad.abs().sum() > 0
    reference, reference_origins = _samples(origins_need_grad=True)
    _backward(field, reference, forward=lambda s: NerfactoField.forward(field, s))
    torch.testing.assert_close(origins.grad, reference_origins.grad)


def test_normals_still_come_from_the_points_gradient() -> None:
    field = _field()
    field.train()
    out = field.forward(_samples()[0], compute_normals=True)
    normals = out[FieldHeadNames.NORMALS]
    assert normals.shape == (6, 5, 3) and torch.isfinite(normals).all()
    torch.testing.assert_close(normals.norm(dim=-1), torch.ones(6, 5))
    assert field.mlp_base.points_need_grad  # restored after the pass
