"""ShaciraGrid: latents -> quantizer -> decoder -> multi-resolution hash lookup, with its rate.

This is the drop-in replacement for a hash-grid encoding. The trainable state is the continuous latent table, the
per-level decoder and the entropy model; the forward pass quantizes the latents (soft/straight-through in training,
hard in eval), decodes the whole table into features and interpolates them at the query points. ``rate_bits`` gives
the differentiable bit count of the same quantized latents, so ``loss + lambda * bits`` trains them to be cheap.

With a stochastic quantizer (SGA) every call draws a new sample, so a training step that needs the lookup and the rate
of one sample quantizes once (``lookup_latents``) and passes the table to ``forward`` and ``rate_bits``.
"""

from __future__ import annotations

from typing import Literal, Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor, nn

from shacira_nerf.core.decoder import LatentDecoder
from shacira_nerf.core.entropy_model import FactorizedEntropyModel
from shacira_nerf.core.hash_grid import GridGeometry, hash_grid_interpolate
from shacira_nerf.core.latents import Latents
from shacira_nerf.core.quantizer import AnnealedQuantizer
from shacira_nerf.core.rate import bits_from_likelihoods

Implementation = Literal["tcnn", "torch"]

try:  # tiny-cuda-nn is optional: a fast CUDA path for the lookup; the torch path always works.
    import tinycudann as _tcnn  # type: ignore

    TCNN_AVAILABLE = True
except Exception:  # ImportError, or a broken CUDA install that fails at import
    _tcnn = None
    TCNN_AVAILABLE = False


class ShaciraGrid(nn.Module):
    """A SHACIRA hash grid.

    Args:
        geometry: levels, resolutions and table sizes.
        latent_dim: latent values per table row (3D: 2, images: 1).
        feature_dim: decoded features per row and level (3D: 4, images: 1).
        quantizer: the rounding schedule; a default ``AnnealedQuantizer`` if omitted.
        entropy_filters: hidden widths of each per-dimension CDF MLP.
        implementation: "tcnn" uses tiny-cuda-nn for the lookup when it is installed and the input is on a CUDA
            device (falling back to torch otherwise, like nerfstudio's encodings); "torch" always uses pure torch.
    """

    def __init__(
        self,
        geometry: GridGeometry,
        latent_dim: int = 2,
        feature_dim: int = 4,
        quantizer: Optional[AnnealedQuantizer] = None,
        entropy_filters: Tuple[int, ...] = (3, 3, 3),
        implementation: Implementation = "tcnn",
    ) -> None:
        super().__init__()
        if implementation not in ("tcnn", "torch"):
            raise ValueError(f"implementation must be 'tcnn' or 'torch', got {implementation!r}")
        self.geometry = geometry
        self.implementation = implementation
        self.latents = Latents(geometry.level_sizes, latent_dim)
        self.quantizer = quantizer if quantizer is not None else AnnealedQuantizer()
        self.decoder = LatentDecoder(geometry.num_levels, latent_dim, feature_dim)
        self.entropy_model = FactorizedEntropyModel(latent_dim, entropy_filters)
        self._eval_cache: Optional[Tuple[tuple, Tensor]] = None
        self._tcnn_encoding = None

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
        return self.quantizer(self.latents.values, noise=noise, generator=generator)

    @torch.no_grad()
    def integer_latents(self) -> Tensor:
        """The rounded latents as int32 (what the file stores)."""
        return torch.round(self.latents.values).to(torch.int32)

    def _eval_latents(self) -> Tensor:
        """Rounded latents for eval-mode lookups, cached until the latents change (renders reuse them)."""
        values = self.latents.values
        key = (values._version, values.data_ptr(), values.device)
        if self._eval_cache is None or self._eval_cache[0] != key:
            with torch.no_grad():
                self._eval_cache = (key, self.quantizer(values))
        return self._eval_cache[1]

    def lookup_latents(
        self, noise: Optional[Tensor] = None, generator: Optional[torch.Generator] = None
    ) -> Float[Tensor, "rows latent_dim"]:
        """The quantized latent table used by the forward pass (cached in eval mode).

        A training step may call this once and pass the result to ``forward`` and ``rate_bits``, so that both see
        the same sample of a stochastic quantizer (``noise``/``generator`` are its randomness).
        """
        if self.training:
            self._eval_cache = None
            return self.quantized_latents(noise, generator)
        return self._eval_latents()

    def _table(self, quantized: Optional[Tensor]) -> Tensor:
        """``quantized`` if given (checked), else the lookup table quantized now."""
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
        """The whole decoded feature table (what tiny-cuda-nn's kernel and the per-level visualisations read).

        ``quantized``: the table from ``lookup_latents`` to decode (default: quantize now).
        """
        return self.decoder(self._table(quantized), self.latents.offsets)

    def forward(self, x: Float[Tensor, "n dim"], quantized: Optional[Tensor] = None) -> Float[Tensor, "n out"]:
        """Features at points ``x`` in [0, 1]^dim; ``quantized``: this step's table from ``lookup_latents``
        (default: quantize now)."""
        if self.implementation == "tcnn" and TCNN_AVAILABLE and x.is_cuda:
            return self._tcnn_lookup(self.decoded_table(quantized), x)
        # Interpolate the latents, then decode (the decoder is affine per level, so this equals decoding first).
        return self.decoder.per_level(hash_grid_interpolate(self._table(quantized), x, self.geometry))

    def _tcnn_lookup(self, table: Tensor, x: Tensor) -> Tensor:
        """tiny-cuda-nn's HashGrid kernel with the decoded table passed in as its parameter tensor.

        tiny-cuda-nn's torch binding takes the parameters as an input of its autograd function, so gradients flow
        back into the decoded table (and from there into the decoder and latents). Its level layout matches
        ``GridGeometry`` (same scales, resolutions and per-level sizes).
        """
        if self._tcnn_encoding is None:
            g = self.geometry
            self._tcnn_encoding = _tcnn.Encoding(
                n_input_dims=g.dim,
                encoding_config={
                    "otype": "HashGrid",
                    "n_levels": g.num_levels,
                    "n_features_per_level": self.feature_dim,
                    "log2_hashmap_size": g.log2_hashmap_size,
                    "base_resolution": g.min_res,
                    "per_level_scale": g.growth,
                    "interpolation": "Linear",
                },
            ).to(x.device)
            if self._tcnn_encoding.params.numel() != table.numel():
                raise RuntimeError(
                    f"tiny-cuda-nn grid has {self._tcnn_encoding.params.numel()} parameters, ours {table.numel()}"
                )
        enc = self._tcnn_encoding
        params = table.reshape(-1).to(enc.params.dtype)
        out = _tcnn.modules._module_function.apply(enc.native_tcnn_module, x.contiguous(), params, enc.loss_scale)
        return out.float().reshape(x.shape[0], -1)

    def rate_bits(self, quantized: Optional[Tensor] = None) -> Tensor:
        """Differentiable estimated bits of the quantized latents under the entropy model (float32 scalar).

        ``quantized``: this step's table from ``lookup_latents`` (default: quantize now; with SGA a new sample).
        """
        q = self.quantized_latents() if quantized is None else self._table(quantized)
        return bits_from_likelihoods(self.entropy_model.likelihood(q))

    def network_parameters(self) -> int:
        """Float parameters stored with the grid in the file (decoder only; latents are coded, the entropy
        model is stored as its integer tables)."""
        return sum(p.numel() for p in self.decoder.parameters())

    def set_progress(self, step: int, max_steps: int) -> None:
        """Advance the quantizer's annealing schedule."""
        self.quantizer.set_progress(step, max_steps)

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001 - torch's signature
        # Moving the module (e.g. .to(device)) drops tiny-cuda-nn state and the eval cache.
        self._eval_cache = None
        self._tcnn_encoding = None
        return super()._apply(fn, *args, **kwargs)
