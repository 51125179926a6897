"""Integer-valued latent tables, one per level of the grid.

The latents are what SHACIRA entropy-codes: a table of ``level_sizes[l]`` rows of ``latent_dim`` values per level.
They are trained as continuous numbers and quantized on the way out (``quantizer.py``); only their rounded integers
are ever stored. All levels live in one flat parameter so that a single optimizer group and a single entropy-model
call cover them; ``offsets`` says where each level starts.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn


class Latents(nn.Module):
    """The latent tables of one grid.

    Args:
        level_sizes: rows of the table at each level (coarse levels may be dense and smaller than the hash table).
        latent_dim: values per row (the appendix uses 2 for 3D scenes and 1 for images).
        init_range: latents start uniform in [-init_range, init_range] (the appendix's U(-0.01, 0.01)).
    """

    def __init__(self, level_sizes: Sequence[int], latent_dim: int, init_range: float = 0.01) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if not level_sizes or min(level_sizes) < 1:
            raise ValueError(f"every level needs at least one latent row, got {list(level_sizes)}")
        self.level_sizes: List[int] = [int(s) for s in level_sizes]
        self.latent_dim = int(latent_dim)
        offsets = [0]
        for size in self.level_sizes:
            offsets.append(offsets[-1] + size)
        self.offsets: List[int] = offsets
        self.values = nn.Parameter(torch.empty(offsets[-1], latent_dim).uniform_(-init_range, init_range))

    @property
    def num_rows(self) -> int:
        """Rows over all levels."""
        return self.offsets[-1]

    @property
    def num_latents(self) -> int:
        """Scalar latents over all levels (rows x latent_dim): the count the rate is normalised by."""
        return self.offsets[-1] * self.latent_dim

    def level(self, values: Float[Tensor, "rows dim"], index: int) -> Float[Tensor, "level_rows dim"]:
        """Slice level ``index`` out of a flat table shaped like ``self.values``."""
        return values[self.offsets[index] : self.offsets[index + 1]]

    @torch.no_grad()
    def load_integers(self, integers: Tensor) -> None:
        """Set the latents to given integers (decoding a file): the rounded values are then exactly these."""
        if tuple(integers.shape) != tuple(self.values.shape):
            raise ValueError(f"latent table shape {tuple(integers.shape)} != expected {tuple(self.values.shape)}")
        self.values.copy_(integers.to(self.values))
