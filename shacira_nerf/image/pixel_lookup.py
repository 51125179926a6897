"""The lookup of a batch's latent tables at the image's pixel centres, through core's lookup seam.

The training pixels never change, so the fixed-point backends serve them: ``MatrixLookup`` (one sparse matrix, a
backward pass without atomics) when every step sees the whole image, ``CornerCacheLookup`` (every pixel's corner rows
and weights computed once, any subset per step) for random pixels on the torch backend. Where a cache would exceed
``CORNER_CACHE_BYTES``, or a lone member trains on random pixels on a GPU backend (Triton's gather beats cached rows
for its one or two columns), the grid's own backend looks the points up. Members of one grid geometry share one call:
their tables are the columns of one operand (random pixels then always use the cached corners: the moving-point
backends are built and tested for a grid's few columns, tiny-cuda-nn takes only 1, 2, 4 or 8); members of different
table sizes are looked up per geometry.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Union

import torch
from jaxtyping import Float
from torch import Tensor

from shacira_nerf.core.hash_grid import GridGeometry
from shacira_nerf.core.lookup import CornerCacheLookup, GridLookup, MatrixLookup, resolve_lookup
from shacira_nerf.image.field import pixel_centres

CORNER_CACHE_BYTES = 2 * 1024**3
"""Largest corner cache (rows + weights of every pixel) kept for training; the sparse matrix and its transpose take
about twice that. Beyond it the grid's backend recomputes the corners every step."""


class _AtPixels:
    """A backend for moving points (``resolve_lookup``) called on a subset of the pixels by index."""

    def __init__(self, backend: GridLookup, points: Float[Tensor, "n 2"]) -> None:
        self.backend, self.points = backend, points

    def __call__(self, table: Tensor, index: Optional[Tensor] = None) -> Tensor:
        return self.backend(table, self.points if index is None else self.points[index])


def pixel_lookup_for(
    geometry: GridGeometry,
    height: int,
    width: int,
    device: Union[str, torch.device],
    implementation: str,
    whole_image: bool,
    members: int = 1,
) -> Union[MatrixLookup, CornerCacheLookup, _AtPixels]:
    """The lookup of ``members`` stacked tables of this geometry at every pixel (``whole_image``) or at random ones,
    called as ``lookup(table, index=...)`` (see the module docstring for the choice)."""
    device = torch.device(device)
    x = pixel_centres(height, width, device)
    backend = resolve_lookup(implementation, geometry, device)
    fits = CornerCacheLookup.cache_bytes(height * width, geometry) <= CORNER_CACHE_BYTES
    if fits and whole_image:
        return MatrixLookup(geometry, x)
    if fits and (backend.name == "torch" or members > 1):
        return CornerCacheLookup(geometry, x)
    return _AtPixels(backend, x)


class PixelLookup:
    """Every member's quantized latents interpolated at the training pixels, per level.

    Args:
        geometries: each member's grid geometry.
        height, width: the image size.
        device: where training runs.
        implementation: the configs' lookup backend name (``ImageFieldConfig.implementation``).
        whole_image: whether every step sees every pixel.
    """

    def __init__(
        self,
        geometries: List[GridGeometry],
        height: int,
        width: int,
        device: Union[str, torch.device],
        implementation: str,
        whole_image: bool,
    ) -> None:
        by_geometry: Dict[GridGeometry, List[int]] = {}
        for i, geometry in enumerate(geometries):
            by_geometry.setdefault(geometry, []).append(i)
        self.members = len(geometries)
        self.groups: List[Tuple[Tensor, int, object]] = [
            (
                torch.tensor(members, device=device),
                geometry.offsets[-1],
                pixel_lookup_for(geometry, height, width, device, implementation, whole_image, len(members)),
            )
            for geometry, members in by_geometry.items()
        ]
        order = [i for members in by_geometry.values() for i in members]
        self.inverse = torch.argsort(torch.tensor(order, device=device)) if len(self.groups) > 1 else None

    def __call__(self, q: Float[Tensor, "b rows d"], index: Optional[Tensor] = None) -> Float[Tensor, "b n levels d"]:
        """Interpolated latents of every member at the pixels ``index`` (None: all), member order kept."""
        B, _, D = q.shape
        outs = []
        for members, rows, lookup in self.groups:
            part = q if members.numel() == B else q.index_select(0, members)
            table = part[:, :rows].permute(1, 0, 2).reshape(rows, -1)  # members' tables as columns
            y = lookup(table, index=index)  # [n, levels, members x d]
            outs.append(y.view(y.shape[0], y.shape[1], members.numel(), D).permute(2, 0, 1, 3))
        if self.inverse is None:
            return outs[0]
        return torch.cat(outs).index_select(0, self.inverse)
