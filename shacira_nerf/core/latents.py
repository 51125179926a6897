"""Integer-valued latent tables, one per level of the grid.

The latents are what SHACIRA entropy-codes: a table of ``level_sizes[l]`` rows of ``latent_dim`` values per level.
They are trained as continuous numbers and quantized on the way out (``quantizer.py``); only their rounded integers
are ever stored. All levels live in one flat parameter so that a single optimizer group and a single entropy-model
call cover them; ``offsets`` says where each level starts. ``StackedLatents`` holds the tables of several grids
(the members of a batched image fit) as one ``[members, rows, dim]`` parameter.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

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


class StackedLatents(nn.Module):
    """The latent tables of several grids as one zero-padded ``[members, rows, dim]`` parameter.

    Why: one optimizer step, quantizer call, lookup and entropy-model call then serve every member (a batched fit of
    many images or settings). Member ``i`` occupies ``values[i, :rows_i, :dim_i]``; the rest is padding, which
    ``masked`` holds at exact zeros so that it never reaches a lookup, a decoder row or the rate.

    Args:
        members: the tables to stack (their values are copied in); they may differ in rows and latent dimension.
    """

    def __init__(self, members: Sequence[Latents]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a stack needs at least one latent table")
        self.shapes: List[Tuple[int, int]] = [(m.num_rows, m.latent_dim) for m in members]
        self.level_sizes: List[List[int]] = [list(m.level_sizes) for m in members]
        rows, dim = max(r for r, _ in self.shapes), max(d for _, d in self.shapes)
        self.padded = any(shape != (rows, dim) for shape in self.shapes)
        with torch.no_grad():
            values = torch.zeros(len(members), rows, dim)
            mask = torch.zeros(len(members), rows, dim)
            for i, m in enumerate(members):
                values[i, : m.num_rows, : m.latent_dim] = m.values
                mask[i, : m.num_rows, : m.latent_dim] = 1.0
        self.values = nn.Parameter(values)
        self.register_buffer("mask", mask, persistent=False)

    @property
    def members(self) -> int:
        return len(self.shapes)

    @property
    def num_latents(self) -> List[int]:
        """Scalar latents of each member (its unpadded rows x latent_dim)."""
        return [r * d for r, d in self.shapes]

    def masked(self, table: Float[Tensor, "members rows dim"]) -> Float[Tensor, "members rows dim"]:
        """``table`` with the padding set to exact zeros (a quantizer maps a padded 0 to about 1e-8 or, with SGA,
        into (0, 1): Adam would turn such a gradient into real updates of padded decoder rows)."""
        return table * self.mask if self.padded else table

    def noise(self, generators: Sequence[Optional[torch.Generator]]) -> Float[Tensor, "members rows dim"]:
        """Uniforms for a stochastic quantizer, member ``i``'s drawn from ``generators[i]`` in its own unpadded shape
        (the numbers a lone grid of that shape would draw), then padded with 0.5."""
        if len(generators) != self.members:
            raise ValueError(f"need one noise generator per member, got {len(generators)} for {self.members}")
        values = self.values.detach()
        out = torch.full_like(values, 0.5)
        for i, (generator, (rows, dim)) in enumerate(zip(generators, self.shapes)):
            out[i, :rows, :dim] = torch.rand((rows, dim), generator=generator, device=values.device, dtype=values.dtype)
        return out

    @torch.no_grad()
    def copy_member_to(self, index: int, latents: Latents) -> None:
        """Write member ``index`` into the unstacked ``latents`` (which must have its shape)."""
        rows, dim = self.shapes[index]
        if (latents.num_rows, latents.latent_dim) != (rows, dim):
            raise ValueError(
                f"member {index} has {rows}x{dim} latents, the target {latents.num_rows}x{latents.latent_dim}"
            )
        latents.values.copy_(self.values[index, :rows, :dim])
