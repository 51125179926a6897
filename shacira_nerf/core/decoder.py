"""The latent decoder: a small learned map from integer latents to the features the hash grid interpolates.

One affine map per level (latent_dim -> feature_dim), initialised N(0, 0.1) as in the appendix, with zero bias. Per
level because coarse and fine levels carry different signal; it costs (latent_dim + 1) * feature_dim floats a level.
The decoder is stored in the file as float32 and counted in the size.
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn

BROADCAST_MAX_LATENT_DIM = 4
"""Up to this many latent dimensions, CUDA decodes with broadcast products instead of a batched matmul."""


def affine_per_level(
    latents: Float[Tensor, "*batch n levels latent_dim"],
    weight: Float[Tensor, "*batch levels latent_dim f"],
    bias: Float[Tensor, "*batch levels f"],
    broadcast: bool,
) -> Float[Tensor, "*batch n levels f"]:
    """``latents[n, l] @ weight[l] + bias[l]`` for every point and level (and every member of leading batch
    dimensions, e.g. the stacked fits of ``shacira_nerf.image.batch``).

    ``broadcast``: as a sum of broadcast products over the latent dimensions instead of a batched matmul. With
    latent_dim 1-2 the matmul has an inner dimension of 1-2 over millions of rows, and cuBLAS runs it with a
    tensor-core GEMM kernel that took ~30% of an H200 training step; the broadcast sum is memory-bound and several
    times faster there. On a CPU the matmul is the faster of the two.
    """
    if not broadcast:
        return torch.einsum("...nld,...ldf->...nlf", latents, weight) + bias.unsqueeze(-3)
    out = bias.unsqueeze(-3)  # [*batch, 1, levels, f]: broadcasts over the points
    for d in range(latents.shape[-1]):
        out = out + latents[..., d : d + 1] * weight[..., d, :].unsqueeze(-3)
    return out


class LatentDecoder(nn.Module):
    """Per-level affine decoders applied to the rows of a flat latent table.

    Args:
        num_levels: levels of the grid.
        latent_dim: latent values per row.
        feature_dim: decoded features per row.
        init_std: standard deviation of the weight initialisation (the appendix's 0.1).
    """

    def __init__(self, num_levels: int, latent_dim: int, feature_dim: int, init_std: float = 0.1) -> None:
        super().__init__()
        if feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
        self.weight = nn.Parameter(torch.randn(num_levels, latent_dim, feature_dim) * init_std)
        self.bias = nn.Parameter(torch.zeros(num_levels, feature_dim))

    @property
    def feature_dim(self) -> int:
        return self.weight.shape[-1]

    def per_level(self, latents: Float[Tensor, "n levels latent_dim"]) -> Float[Tensor, "n levels_times_f"]:
        """Decode latents already interpolated per level (level ``l`` uses decoder ``l``).

        Interpolation weights sum to one, so an affine decoder commutes with interpolation: decoding the
        interpolated latents equals interpolating the decoded table (to float rounding) while touching
        ``latent_dim`` instead of ``feature_dim`` values per corner.
        """
        weight, bias = self.weight.to(latents.dtype), self.bias.to(latents.dtype)
        broadcast = latents.is_cuda and latents.shape[-1] <= BROADCAST_MAX_LATENT_DIM
        out = affine_per_level(latents, weight, bias, broadcast)
        return out.reshape(latents.shape[0], -1)

    def forward(self, latents: Float[Tensor, "rows latent_dim"], offsets: Sequence[int]) -> Float[Tensor, "rows f"]:
        """Decode every row of the flat table; ``offsets`` (len levels + 1) delimits the levels."""
        parts = [
            torch.addmm(self.bias[level], latents[offsets[level] : offsets[level + 1]], self.weight[level])
            for level in range(len(offsets) - 1)
        ]
        return torch.cat(parts, dim=0)
