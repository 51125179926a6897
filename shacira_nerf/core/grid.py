"""ShaciraGrid: latents -> quantizer -> lookup -> decoder, with its rate.

This is the drop-in replacement for a hash-grid encoding. The trainable state is the continuous latent table, the
per-level decoder and the entropy model; the forward pass quantizes the latents (soft/straight-through in training,
hard in eval), interpolates them at the query points through the grid's lookup backend (``lookup.py``, chosen once
when the grid is built) and decodes them per level. ``rate_bits`` gives the differentiable bit count of the same
quantized latents, so ``loss + lambda * bits`` trains them to be cheap.

Quantize once per step: the quantized table is kept until the latents change (the optimizer's in-place update bumps
their version), the annealing schedule moves, or a backward pass has gone through it, so the lookups of one training
step (nerfacto calls the main field once and each proposal network once) and its rate all see one table, and with a
stochastic quantizer (SGA) one sample. A caller may also take the table itself (``lookup_latents``) and pass it to
``forward`` and ``rate_bits``.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from jaxtyping import Float
from torch import Tensor, nn

from shacira_nerf.core.decoder import LatentDecoder
from shacira_nerf.core.entropy_model import ENTROPY_MODELS, FUSED_FILTERS, EntropyModel, FactorizedEntropyModel
from shacira_nerf.core.hash_grid import GridGeometry
from shacira_nerf.core.latents import Latents
from shacira_nerf.core.lookup import GridLookup, resolve_lookup
from shacira_nerf.core.per_level_entropy import PerLevelEntropyModel
from shacira_nerf.core.quantizer import AnnealedQuantizer


def make_entropy_model(name: str, latents: Latents, filters: Tuple[int, ...] = (3, 3, 3)) -> EntropyModel:
    """The entropy model ``name`` (``ENTROPY_MODELS``) for a grid's latents."""
    if name == "factorized":
        return FactorizedEntropyModel(latents.latent_dim, filters)
    if name == "per_level":
        return PerLevelEntropyModel(latents.latent_dim, latents.offsets, filters)
    raise ValueError(f"unknown entropy model {name!r} (known: {', '.join(ENTROPY_MODELS)})")


class ShaciraGrid(nn.Module):
    """A SHACIRA hash grid.

    Args:
        geometry: levels, resolutions and table sizes.
        latent_dim: latent values per table row (3D: 2, images: 1).
        feature_dim: decoded features per row and level (3D: 4, images: 1).
        quantizer: the rounding schedule; a default ``AnnealedQuantizer`` if omitted.
        entropy_filters: hidden widths of each CDF MLP.
        entropy_model: which entropy model codes the latents (``ENTROPY_MODELS``): "factorized" (one CDF per latent
            dimension, the appendix's) or "per_level" (one per level and dimension).
        implementation: the lookup backend (``lookup.LOOKUP_CHOICES``): "auto" (the fastest tested one for
            ``device``), "torch", "triton" or "tcnn"; resolved here, once, and a one-line error if it cannot run.
        device: where the grid will run (the backend is chosen for it); the module itself is built on the CPU.
        sga_kernel: with an SGA quantizer and the Triton lookup, quantize with one Triton kernel that draws its own
            noise (``triton_sga``) instead of torch's ~27 elementwise kernels; ignored on other backends. Off by
            default: tested against the torch reference in Triton's CPU interpreter, not yet on a GPU.
    """

    def __init__(
        self,
        geometry: GridGeometry,
        latent_dim: int = 2,
        feature_dim: int = 4,
        quantizer: Optional[AnnealedQuantizer] = None,
        entropy_filters: Tuple[int, ...] = (3, 3, 3),
        implementation: str = "auto",
        device: Union[str, torch.device] = "cpu",
        entropy_model: str = "factorized",
        sga_kernel: bool = False,
    ) -> None:
        super().__init__()
        self.geometry = geometry
        self.lookup: GridLookup = resolve_lookup(implementation, geometry, device)
        self.latents = Latents(geometry.level_sizes, latent_dim)
        self.quantizer = quantizer if quantizer is not None else AnnealedQuantizer()
        self.decoder = LatentDecoder(geometry.num_levels, latent_dim, feature_dim)
        self.entropy_model = make_entropy_model(entropy_model, self.latents, tuple(entropy_filters))
        self._table_cache: Optional[Tuple[tuple, Tensor]] = None
        # The rate runs as one Triton kernel with the Triton lookup, for the entropy model it is written for.
        self.fused_rate = self.lookup.fused_rate and self.entropy_model.filters == FUSED_FILTERS
        self.sga_kernel = bool(sga_kernel) and self.lookup.sga_kernel

    @property
    def implementation(self) -> str:
        """The name of the lookup backend in use ("torch", "triton", "tcnn")."""
        return self.lookup.name

    @property
    def latent_dim(self) -> int:
        return self.latents.latent_dim

    @property
    def feature_dim(self) -> int:
        return self.decoder.feature_dim

    def get_out_dim(self) -> int:
        """Output features per point: levels x feature_dim (nerfstudio's encoding interface)."""
        return self.geometry.num_levels * self.feature_dim

    def quantized_latents(
        self, noise: Optional[Tensor] = None, generator: Optional[torch.Generator] = None
    ) -> Float[Tensor, "rows latent_dim"]:
        """The latents as the network sees them now: annealed/straight-through rounded in training, rounded in eval.

        ``noise`` or ``generator``: the randomness of a stochastic (SGA) quantizer, see ``AnnealedQuantizer``.
        """
        return self.quantizer(self.latents.values, noise=noise, generator=generator, kernel=self.sga_kernel)

    @torch.no_grad()
    def integer_latents(self) -> Tensor:
        """The rounded latents as int32 (what the file stores)."""
        return torch.round(self.latents.values).to(torch.int32)

    def _cache_key(self) -> tuple:
        values = self.latents.values
        return (
            values._version, values.data_ptr(), values.device, self.training, torch.is_grad_enabled(),
            self.quantizer.progress_value,
        )  # fmt: skip

    def _forget_table(self, grad: Tensor) -> Tensor:
        """Backward hook on the cached table: a table a backward pass has gone through is not reused."""
        self._table_cache = None
        return grad

    @torch.compiler.disable
    def lookup_latents(
        self, noise: Optional[Tensor] = None, generator: Optional[torch.Generator] = None
    ) -> Float[Tensor, "rows latent_dim"]:
        """This step's quantized latent table (see the module docstring): quantized on the first call after the
        latents or the schedule changed, the same tensor after that.

        ``noise``/``generator``: the randomness of a stochastic quantizer; passing either quantizes anew (a caller
        that owns the randomness owns the sample).

        Never compiled (``torch.compiler.disable``): the cache and the schedule are Python state that changes every
        step, which ``torch.compile`` would turn into guards and a recompilation per step.
        """
        if noise is not None or generator is not None:
            self._table_cache = None
            return self.quantized_latents(noise, generator)
        key = self._cache_key()
        if self._table_cache is None or self._table_cache[0] != key:
            table = self.quantized_latents()
            if table.requires_grad:
                table.register_hook(self._forget_table)
            self._table_cache = (key, table)
        return self._table_cache[1]

    def _table(self, quantized: Optional[Tensor]) -> Tensor:
        """``quantized`` if given (checked), else this step's table."""
        if quantized is None:
            return self.lookup_latents()
        if quantized.shape != self.latents.values.shape:
            raise ValueError(
                f"quantized latents have shape {tuple(quantized.shape)}, need {tuple(self.latents.values.shape)}"
            )
        if (
            self.training
            and torch.is_grad_enabled()
            and self.latents.values.requires_grad
            and not quantized.requires_grad
        ):  # e.g. the eval-mode cache: training through it would silently leave the latents untrained
            raise ValueError(
                "quantized latents passed in training mode carry no gradient (take them from lookup_latents)"
            )
        return quantized

    def decoded_table(self, quantized: Optional[Tensor] = None) -> Float[Tensor, "rows feature_dim"]:
        """The whole decoded feature table (what the per-level visualisations read).

        ``quantized``: a table from ``lookup_latents`` to decode (default: this step's).
        """
        return self.decoder(self._table(quantized), self.latents.offsets)

    def forward(self, x: Float[Tensor, "n dim"], quantized: Optional[Tensor] = None) -> Float[Tensor, "n out"]:
        """Features at points ``x`` in [0, 1]^dim; ``quantized``: a table from ``lookup_latents`` (default: this
        step's)."""
        # Interpolate the latents, then decode (the decoder is affine per level, so this equals decoding first).
        return self.decoder.per_level(self.lookup(self._table(quantized), x))

    def rate_bits(self, quantized: Optional[Tensor] = None) -> Tensor:
        """Differentiable estimated bits of the quantized latents under the entropy model (float32 scalar).

        ``quantized``: a table from ``lookup_latents`` (default: this step's, the one the lookups used).
        """
        return self.entropy_model.bits(self._table(quantized), fused=self.fused_rate)

    def network_parameters(self) -> int:
        """Float parameters stored with the grid in the file (decoder only; latents are coded, the entropy
        model is stored as its integer tables)."""
        return sum(p.numel() for p in self.decoder.parameters())

    def set_progress(self, step: int, max_steps: int) -> None:
        """Advance the quantizer's annealing schedule."""
        self.quantizer.set_progress(step, max_steps)

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001 - torch's signature
        # Moving the module (e.g. .to(device)) drops the cached table.
        self._table_cache = None
        return super()._apply(fn, *args, **kwargs)
