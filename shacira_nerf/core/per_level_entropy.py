"""The per-level factorized entropy model: one monotone CDF per (level, latent dimension).

Coarse and fine levels of a hash grid have different statistics (a dense coarse level holds few, large latents; a
fine hashed level mostly small ones), and one CDF per dimension for the whole grid pays for the mismatch: on the
H200 lego file the ideal per-level tables are ~6% smaller than one table per dimension (benchmarks/README.md). This
model keeps the factorized model's CDF family and simply has levels x dimensions of them; the file stores one integer
table per (level, dimension) and decoding reads those (``bitstream.py``), so it stays bit-exact across devices.

How it evaluates without a launch per level: the rows of a grid's table belong to levels in contiguous blocks
(``Latents.offsets``). The torch path spreads the [rows, C] latents into a zero-padded [max level rows, levels x C]
table with one index_copy, runs the factorized CDF MLP over its levels x C channels in one go (the very same code),
and gathers the valid entries back with one index_select: two kernels more than the factorized model (and two in the
backward pass), whatever the number of levels; the padding costs (levels x the largest level) / rows in memory and
time (1.0-1.4x for nerfacto-like grids, whose fine levels all have the hash table's size). Measured on the 2-core
CPU, a 16-level grid of 2^15-row tables (457k rows, 1.15x padding): the rate and its backward take ~185 ms against
the factorized model's ~128 ms, most of the difference in the MLP's many small batched products. The fused Triton
kernel reads each level's row range instead of padding (``triton_rate``).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from shacira_nerf.core.entropy_model import LIKELIHOOD_BOUND, EntropyModel, FactorizedEntropyModel, table_layout


class PerLevelEntropyModel(EntropyModel):
    """One CDF MLP per (level, latent dimension); coding table ``level * channels + channel``.

    Args:
        channels: latent dimensions per row.
        offsets: where each level's rows start, and the total (``Latents.offsets``); the model is for these rows.
        filters: hidden widths of each CDF MLP.
        init_scale: initial spread of each modelled distribution.
    """

    name = "per_level"

    def __init__(
        self, channels: int, offsets: Sequence[int], filters: Sequence[int] = (3, 3, 3), init_scale: float = 10.0
    ) -> None:
        super().__init__()
        offsets = [int(o) for o in offsets]
        if len(offsets) < 2 or offsets[0] != 0 or any(b <= a for a, b in zip(offsets, offsets[1:])):
            raise ValueError(f"level offsets must start at 0 and increase, got {offsets}")
        self.channels = int(channels)
        self.offsets: List[int] = offsets
        self.num_levels = len(offsets) - 1
        self.num_tables = self.num_levels * self.channels
        self.level_sizes = [b - a for a, b in zip(offsets, offsets[1:])]
        self.max_level_rows = max(self.level_sizes)
        # Set level * channels + d models dimension d of that level (the coding tables' order, ``table_layout``).
        self.cdfs = FactorizedEntropyModel(self.num_tables, filters, init_scale)
        self.filters = self.cdfs.filters
        self._layout = table_layout(self.name, self.num_levels, self.channels)
        self._index: Dict[str, Tuple[Tensor, Tensor]] = {}

    def table_index(self, level: int, channel: int) -> int:
        return self._layout[level][channel]

    @property
    def num_rows(self) -> int:
        return self.offsets[-1]

    def _rows(self, device: torch.device) -> Tuple[Tensor, Tensor]:
        """(level, position in the padded table: row within the level x levels + level) of every row, made once per
        device."""
        key = str(device)
        if key not in self._index:
            sizes = torch.tensor(self.level_sizes, device=device)
            level = torch.repeat_interleave(torch.arange(self.num_levels, device=device), sizes)
            starts = torch.tensor(self.offsets[:-1], device=device)
            row = torch.arange(self.num_rows, device=device) - starts[level]
            self._index[key] = (level, row * self.num_levels + level)
        return self._index[key]

    def _check(self, x: Tensor) -> None:
        if tuple(x.shape) != (self.num_rows, self.channels):
            raise ValueError(f"expected the grid's {self.num_rows} rows x {self.channels} latent channels, got shape "
                             f"{tuple(x.shape)}")  # fmt: skip

    def _spread(self, x: Float[Tensor, "rows channels"]) -> Float[Tensor, "level_rows sets"]:
        """The rows as a zero-padded table: entry (r, level * C + d) is row r of that level, dimension d (one
        index_copy; its gradient is an index_select)."""
        _, position = self._rows(x.device)
        padded = x.new_zeros(self.max_level_rows * self.num_levels, self.channels).index_copy(0, position, x)
        return padded.view(self.max_level_rows, self.num_tables)

    def _gather(self, y: Float[Tensor, "level_rows sets"]) -> Float[Tensor, "rows channels"]:
        """Inverse of ``_spread``: the grid's rows back out of the padded table (one index_select)."""
        _, position = self._rows(y.device)
        return y.reshape(self.max_level_rows * self.num_levels, self.channels).index_select(0, position)

    def likelihood(self, x: Float[Tensor, "rows channels"]) -> Float[Tensor, "rows channels"]:
        """P(x) of each row under its level's CDFs (eq. 2), float32, bounded below (the factorized model's)."""
        self._check(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._gather(self.cdfs.likelihood(self._spread(x.float())))

    def bits(self, x: Float[Tensor, "rows channels"], fused: bool = False) -> Float[Tensor, ""]:
        """Differentiable total bits; ``fused``: the Triton kernel reading each level's rows (``triton_rate``)."""
        if fused:
            from shacira_nerf.core.triton_rate import fused_rate_bits

            self._check(x)
            cdfs = self.cdfs
            return fused_rate_bits(
                x, list(cdfs.matrices), list(cdfs.biases), list(cdfs.factors), LIKELIHOOD_BOUND, self.offsets
            )
        return super().bits(x)

    @torch.no_grad()
    def estimate_bits(self, integers: Float[Tensor, "rows channels"]) -> float:
        """See ``EntropyModel.estimate_bits``: per (level, channel), -sum log2 P(k) + rows log2 (mass of the
        [min, max] that level's latents of that channel use)."""
        self._check(integers)
        level, _ = self._rows(integers.device)
        shape = (self.num_levels, self.channels)
        per_row = -torch.log2(self.likelihood(integers)).double()
        bits = torch.zeros(shape, dtype=torch.float64, device=integers.device).index_add_(0, level, per_row)
        where = level[:, None].expand(-1, self.channels)
        values = integers.float()
        lo = values.new_full(shape, float("inf")).scatter_reduce(0, where, values, "amin")
        hi = values.new_full(shape, float("-inf")).scatter_reduce(0, where, values, "amax")
        mass = self.cdfs.cdf((hi + 0.5).view(1, -1)) - self.cdfs.cdf((lo - 0.5).view(1, -1))
        rows = torch.tensor(self.level_sizes, dtype=torch.float64, device=integers.device)[:, None]
        bits = bits + rows * torch.log2(mass.clamp_min(1e-30)).double().view(shape)
        # As in the factorized model: a (level, channel) of one integer costs 0, never a hair below.
        return float(bits.clamp_min(0.0).sum())

    @torch.no_grad()
    def pmf(self, table: int, low: int, high: int) -> np.ndarray:
        """Float64 probabilities of ``low..high`` under coding table ``table`` (= level * channels + channel)."""
        if not 0 <= table < self.num_tables:
            raise ValueError(f"table {table} outside [0, {self.num_tables})")
        return self.cdfs.pmf(table, low, high)

    def histogram(self, integers: Float[Tensor, "rows channels"]) -> List[Tuple[Tensor, Tensor]]:
        """(distinct values, counts) per (level, channel), in table order."""
        self._check(integers)
        out = []
        for lo, hi in zip(self.offsets, self.offsets[1:]):
            out.extend(torch.unique(integers[lo:hi, d], return_counts=True) for d in range(self.channels))
        return out

    def histogram_bits(self, histogram: Sequence[Tuple[Tensor, Tensor]]) -> Float[Tensor, ""]:
        """Bits from per-table histograms in one CDF evaluation: the tables' distinct values side by side, padded
        with zero-count entries (a refit step is one call, not one per level and channel)."""
        if len(histogram) != self.num_tables:
            raise ValueError(f"expected {self.num_tables} histograms, got {len(histogram)}")
        device = histogram[0][0].device
        width = max(v.shape[0] for v, _ in histogram)
        values = torch.zeros(width, self.num_tables, device=device)
        counts = torch.zeros(width, self.num_tables, device=device)
        for t, (v, c) in enumerate(histogram):
            values[: v.shape[0], t] = v.float()
            counts[: c.shape[0], t] = c.float()
        return -(counts * torch.log2(self.cdfs.likelihood(values))).sum()
