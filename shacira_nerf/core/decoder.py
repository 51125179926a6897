"""The latent decoder: a small learned map from integer latents to the features the hash grid interpolates.

One affine map per level (latent_dim -> feature_dim), initialised N(0, 0.1) as in the appendix, with zero bias. Per
level because coarse and fine levels carry different signal; it costs (latent_dim + 1) * feature_dim floats a level.
The decoder is stored in the file as float32 and counted in the size.
"""

from __future__ import annotations

from typing import Optional, Sequence

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
    dimensions, e.g. the stacked image fits of ``shacira_nerf.image.train``).

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
        members: a stack of this many decoders (weight ``[members, levels, latent_dim, f]``), all zero, to be
            filled by ``stack``; None (the default, and the NeRF path's) is one decoder, initialised at random.
    """

    def __init__(
        self, num_levels: int, latent_dim: int, feature_dim: int, init_std: float = 0.1, members: Optional[int] = None
    ) -> None:
        super().__init__()
        if feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
        if members is None:
            self.weight = nn.Parameter(torch.randn(num_levels, latent_dim, feature_dim) * init_std)
            self.bias = nn.Parameter(torch.zeros(num_levels, feature_dim))
        else:  # zeros, no random draw: a stack's members are copied in, and the global RNG stays where it was
            self.weight = nn.Parameter(torch.zeros(members, num_levels, latent_dim, feature_dim))
            self.bias = nn.Parameter(torch.zeros(members, num_levels, feature_dim))

    @classmethod
    @torch.no_grad()
    def stack(cls, decoders: Sequence["LatentDecoder"]) -> "LatentDecoder":
        """The decoders as one stack (leading member dimension), latent dimensions zero-padded to the largest.

        Why zero rows: a padded latent column (always zero, see ``StackedLatents``) then meets a zero weight, so
        the padding neither changes a member's features nor receives a gradient.
        """
        if not decoders or any(d.weight.dim() != 3 for d in decoders):
            raise ValueError("stack needs at least one unstacked decoder")
        levels, features = decoders[0].weight.shape[0], decoders[0].feature_dim
        if any((d.weight.shape[0], d.feature_dim) != (levels, features) for d in decoders):
            raise ValueError("stacked decoders need the same levels and feature dimension")
        out = cls(levels, max(d.latent_dim for d in decoders), features, members=len(decoders))
        for i, d in enumerate(decoders):
            out.weight[i, :, : d.latent_dim] = d.weight
            out.bias[i] = d.bias
        return out

    @torch.no_grad()
    def copy_member_to(self, index: int, decoder: "LatentDecoder") -> None:
        """Write member ``index`` of this stack into the unstacked ``decoder`` (its own latent dimension)."""
        decoder.weight.copy_(self.weight[index, :, : decoder.latent_dim])
        decoder.bias.copy_(self.bias[index])

    @property
    def feature_dim(self) -> int:
        return self.weight.shape[-1]

    @property
    def latent_dim(self) -> int:
        return self.weight.shape[-2]

    def per_level(
        self, latents: Float[Tensor, "*members n levels latent_dim"]
    ) -> Float[Tensor, "*members n levels_times_f"]:
        """Decode latents already interpolated per level (level ``l`` uses decoder ``l``; with a stack, member ``b``
        of the leading dimension uses decoder ``b``).

        Interpolation weights sum to one, so an affine decoder commutes with interpolation: decoding the
        interpolated latents equals interpolating the decoded table (to float rounding) while touching
        ``latent_dim`` instead of ``feature_dim`` values per corner.
        """
        weight, bias = self.weight.to(latents.dtype), self.bias.to(latents.dtype)
        broadcast = latents.is_cuda and latents.shape[-1] <= BROADCAST_MAX_LATENT_DIM
        out = affine_per_level(latents, weight, bias, broadcast)
        return out.reshape(*latents.shape[:-2], -1)

    def forward(self, latents: Float[Tensor, "rows latent_dim"], offsets: Sequence[int]) -> Float[Tensor, "rows f"]:
        """Decode every row of the flat table; ``offsets`` (len levels + 1) delimits the levels."""
        parts = [
            torch.addmm(self.bias[level], latents[offsets[level] : offsets[level + 1]], self.weight[level])
            for level in range(len(offsets) - 1)
        ]
        return torch.cat(parts, dim=0)
