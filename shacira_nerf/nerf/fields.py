"""nerfacto's main field and proposal density fields with every hash grid replaced by a ShaciraGrid.

The fields keep nerfacto's structure and forward code (``get_density``, ``get_outputs``); only the encoding
changes. The parent constructors are called with a one-level, 16-row stock grid (a few hundred bytes, built and
dropped at once) and always with ``implementation="torch"`` for the MLPs: plain ``nn.Linear`` weights are what the
scene file stores and what decodes on any device. ``implementation`` (``core.lookup``) selects only the grid lookup.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from nerfstudio.cameras.rays import RaySamples
from nerfstudio.field_components.mlp import MLP
from nerfstudio.field_components.spatial_distortions import SpatialDistortion
from nerfstudio.fields.density_fields import HashMLPDensityField
from nerfstudio.fields.nerfacto_field import NerfactoField
from torch import Tensor, nn

from shacira_nerf.core.grid import ShaciraGrid
from shacira_nerf.core.hash_grid import GridGeometry
from shacira_nerf.core.quantizer import AnnealedQuantizer

_STUB_GRID = {"num_levels": 1, "log2_hashmap_size": 4, "features_per_level": 1}
"""Arguments for the parent's throw-away stock grid (replaced right after construction)."""


def make_grid(
    num_levels: int,
    base_res: int,
    max_res: int,
    log2_hashmap_size: int,
    latent_dim: int,
    feature_dim: int,
    quantizer: AnnealedQuantizer,
    implementation: str,
    entropy_filters: Tuple[int, ...] = (3, 3, 3),
    device: Union[str, torch.device] = "cpu",
    entropy_model: str = "factorized",
    sga_kernel: bool = False,
) -> ShaciraGrid:
    """A 3D SHACIRA grid with nerfacto's level parameters, its lookup backend chosen for ``device``."""
    geometry = GridGeometry(3, num_levels, base_res, max_res, log2_hashmap_size)
    return ShaciraGrid(
        geometry, latent_dim, feature_dim, quantizer=quantizer, entropy_filters=entropy_filters,
        implementation=implementation, device=device, entropy_model=entropy_model, sga_kernel=sga_kernel,
    )  # fmt: skip


class ShaciraNerfactoField(NerfactoField):
    """nerfacto's field whose base MLP reads a SHACIRA grid instead of a hash encoding."""

    def __init__(
        self,
        aabb: Tensor,
        num_images: int,
        grid: ShaciraGrid,
        hidden_dim: int = 64,
        num_layers: int = 2,
        geo_feat_dim: int = 15,
        spatial_distortion: Optional[SpatialDistortion] = None,
        **kwargs,
    ) -> None:
        super().__init__(
            aabb,
            num_images,
            num_layers=num_layers,
            hidden_dim=hidden_dim,
            geo_feat_dim=geo_feat_dim,
            spatial_distortion=spatial_distortion,
            base_res=grid.geometry.min_res,
            max_res=grid.geometry.max_res,
            implementation="torch",
            **_STUB_GRID,
            **kwargs,
        )
        head = MLP(
            in_dim=grid.get_out_dim(),
            num_layers=num_layers,
            layer_width=hidden_dim,
            out_dim=1 + geo_feat_dim,
            activation=nn.ReLU(),
            out_activation=None,
            implementation="torch",
        )
        # NerfactoField.get_density calls self.mlp_base(positions in [0, 1]^3).
        self.mlp_base = GridThenHead(grid, head)

    @property
    def grid(self) -> ShaciraGrid:
        """The field's SHACIRA grid (registered once, as ``mlp_base.0``, so checkpoints hold it once)."""
        return self.mlp_base[0]

    def forward(self, ray_samples: RaySamples, compute_normals: bool = False):  # noqa: ANN201 - nerfstudio's
        """nerfacto's forward; the grid differentiates with respect to its points only when someone needs it.

        ``NerfactoField.get_density`` marks its sample positions as requiring a gradient, for normals. Without
        normals and without a gradient already flowing into the samples (the camera optimizer's), that gradient
        goes to a temporary nobody reads, yet the lookup's backward computes it (on the Triton path through the
        torch reference: a second interpolation of every sample, each step). Every parameter's gradient is the same
        either way.
        """
        frustums = ray_samples.frustums
        upstream = any(
            t is not None and t.requires_grad
            for t in (frustums.origins, frustums.directions, frustums.starts, frustums.ends)
        )
        self.mlp_base.points_need_grad = compute_normals or upstream
        try:
            return super().forward(ray_samples, compute_normals=compute_normals)
        finally:
            self.mlp_base.points_need_grad = True


class GridThenHead(nn.Sequential):
    """A field's ``mlp_base``: its SHACIRA grid (``[0]``), then the MLP head (``[1]``), as ``nn.Sequential`` (same
    parameter names); the grid sees its points detached while ``points_need_grad`` is False."""

    points_need_grad: bool = True
    """Whether the gradient with respect to the points is computed (True unless the owning field says otherwise
    for one forward pass)."""

    def forward(self, x: Tensor) -> Tensor:
        return self[1](self[0](x if self.points_need_grad else x.detach()))


class ShaciraDensityField(HashMLPDensityField):
    """nerfacto's proposal density field on a SHACIRA grid."""

    def __init__(
        self,
        aabb: Tensor,
        grid: ShaciraGrid,
        num_layers: int = 2,
        hidden_dim: int = 64,
        spatial_distortion: Optional[SpatialDistortion] = None,
        use_linear: bool = False,
        average_init_density: float = 1.0,
    ) -> None:
        super().__init__(
            aabb,
            num_layers=num_layers,
            hidden_dim=hidden_dim,
            spatial_distortion=spatial_distortion,
            use_linear=use_linear,
            base_res=grid.geometry.min_res,
            max_res=grid.geometry.max_res,
            average_init_density=average_init_density,
            implementation="torch",
            **_STUB_GRID,
        )
        self.encoding = grid
        if use_linear:
            self.linear = nn.Linear(grid.get_out_dim(), 1)
        else:
            head = MLP(
                in_dim=grid.get_out_dim(),
                num_layers=num_layers,
                layer_width=hidden_dim,
                out_dim=1,
                activation=nn.ReLU(),
                out_activation=None,
                implementation="torch",
            )
            self.mlp_base = nn.Sequential(grid, head)

    @property
    def grid(self) -> ShaciraGrid:
        """The proposal network's SHACIRA grid (``encoding``; also ``mlp_base.0`` as in nerfstudio)."""
        return self.encoding
