"""An image as a SHACIRA field: a 2D SHACIRA hash grid read by a small MLP that outputs RGB.

The appendix's image experiments (sec. 2): latent and feature dimension 1, a 2-hidden-layer ReLU MLP of width 16 for
Kodak-sized images, Xavier-initialised, rate weight 1e-4; the latents are quantized with stochastic Gumbel annealing
for 90% of training as in the authors' public Kodak config (the appendix describes 95% of soft rounding). The
field is a function on [0, 1]^2 (coordinate 0 runs down the rows, coordinate 1 across the columns), so rendering it
on a denser pixel grid than the one it was fitted on is the appendix's super-resolution (sec. 5).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Dict, Iterable, Literal, Optional, Tuple, Union

import torch
from jaxtyping import Float
from torch import Tensor, nn

from shacira_nerf.core.grid import ShaciraGrid
from shacira_nerf.core.hash_grid import GridGeometry
from shacira_nerf.core.lookup import LOOKUP_CHOICES
from shacira_nerf.core.precision import NETWORK_PRECISIONS, round_to_precision_, stored_network_bytes
from shacira_nerf.core.quantizer import QUANTIZER_MODES, AnnealedQuantizer, QuantizerMode
from shacira_nerf.errors import UserError

RENDER_CHUNK = 2**16
"""Pixels evaluated per forward pass when rendering (bounds memory; the result does not depend on it)."""


class ImageConfigError(UserError, ValueError):
    """An image-field setting is invalid; the message names the setting."""


@dataclass
class ImageFieldConfig:
    """Architecture and rate settings of an image field (defaults: the appendix's Kodak settings)."""

    num_levels: int = 16
    """Resolution levels of the hash grid."""
    min_res: int = 16
    """Grid resolution of the coarsest level (lowered to max_res for images smaller than it)."""
    max_res: int = 0
    """Grid resolution of the finest level; 0 means max(height, width) of the image, one cell per pixel."""
    log2_hashmap_size: int = 15
    """log2 of the hash-table rows of the fine levels (the appendix sweeps 13..17: more rows, more PSNR and bits)."""
    latent_dim: int = 1
    """Integer latents per table row (the appendix uses 1 for images)."""
    feature_dim: int = 1
    """Decoded features per row and level (1 for Kodak, 2 for giga-pixel images)."""
    hidden_dim: int = 16
    """Width of the MLP's hidden layers (16 for Kodak, 48 for UVG-F, 96 for larger images): stored as float32."""
    num_hidden_layers: int = 2
    """Hidden layers of the MLP (the appendix fixes 2)."""
    rate_lambda: float = 1e-4
    """Rate weight: loss = MSE + rate_lambda x estimated bits per latent (appendix: 1e-4). It acts only once the
    entropy model fits the latents: at lr_entropy 1e-4 that takes far more than a few thousand steps (lambda then
    barely matters); at lr_entropy 1e-2, 1e-4..1e-3 trades about 2 dB for a quarter fewer bits and 1e-2 or more
    mostly costs PSNR. log2_hashmap_size moves the size more."""
    anneal_fraction: float = 0.9
    """Fraction of training with SGA (or annealed soft rounding); straight-through rounding afterwards (authors: 0.9)."""
    quantizer: QuantizerMode = "sga"
    """Rounding stand-in while annealing: "sga" (stochastic Gumbel annealing, the authors' public Kodak config) or
    "soft_round" (Agustsson & Theis, deterministic: on kodim23 its latents learned continuous values that the switch
    to rounding destroyed; 1.6-3.8 dB worse against JPEG than SGA); see core/quantizer.py."""
    sga_temperature_start: float = 1.0
    """SGA temperature at the first step (the authors: 1.0); it falls geometrically over anneal_fraction."""
    sga_temperature_end: float = 0.1
    """SGA temperature at the end of annealing (the authors' Kodak config: 0.1)."""
    soft_round_alpha_start: float = 1.0
    """Soft-rounding sharpness at the first step (small: nearly the identity)."""
    soft_round_alpha_end: float = 32.0
    """Soft-rounding sharpness at the end of annealing (large: nearly hard rounding)."""
    entropy_filters: Tuple[int, ...] = (3, 3, 3)
    """Hidden widths of the entropy model's CDF MLP (Balle et al. 2018)."""
    lr_mlp: float = 1e-3
    """Adam learning rate of the RGB MLP (appendix: 1e-3 for Kodak)."""
    lr_decoder: float = 1e-2
    """Adam learning rate of the latent decoder (appendix: 0.01 for images)."""
    lr_latents: float = 1e-2
    """Adam learning rate of the latents (appendix: 0.01 for Kodak, 0.1 for larger images)."""
    lr_entropy: float = 1e-4
    """Adam learning rate of the entropy model (appendix: 1e-4, following LilNetX)."""
    lr_decay_start: float = 1.0
    """Fraction of training after which every learning rate decays (half cosine) towards lr_final_factor of its
    value; 1.0 keeps them constant. A decay at the end lets the MLP and decoder settle on the final integers."""
    lr_final_factor: float = 1.0
    """Learning-rate multiplier reached at the last step (with lr_decay_start < 1)."""
    rate_lambda_start_factor: float = 1.0
    """The rate weight starts at this multiple of rate_lambda and decays (half cosine over all steps) to
    rate_lambda; the authors' public Kodak config decays 1e-3 -> 1e-4, i.e. factor 10."""
    entropy_refit_steps: int = 500
    """Steps fitting the entropy model alone to the final integer latents (the file's tables come from it)."""
    batch_pixels: int = 2**16
    """Pixels per training step: the whole image when it has at most this many, else a random sample."""
    network_precision: Literal["float16", "float32", "int8"] = "float16"
    """How the file stores the decoder and MLP weights. float16 halves their bytes (about 1 kB of a 15 kB Kodak file
    at 0.3 bpp), int8 (values and one float32 scale per tensor, ``core/precision.py``) quarters them; the fitted
    weights are rounded to it before writing, so the file decodes to exactly the field that was measured."""
    implementation: str = "auto"
    """Hash lookup backend (``core.lookup``): "auto" (Triton on CUDA, torch elsewhere), "torch", "triton" or "tcnn";
    whole-image steps use the fixed-point sparse matrix instead."""

    def __post_init__(self) -> None:
        checks = [
            (self.num_levels >= 1, "num_levels", "must be >= 1"),
            (self.min_res >= 1, "min_res", "must be >= 1"),
            (self.max_res >= 0, "max_res", "must be >= 0 (0: the image size)"),
            (4 <= self.log2_hashmap_size <= 26, "log2_hashmap_size", "must be in [4, 26]"),
            (self.latent_dim >= 1, "latent_dim", "must be >= 1"),
            (self.feature_dim >= 1, "feature_dim", "must be >= 1"),
            (self.hidden_dim >= 1, "hidden_dim", "must be >= 1"),
            (self.num_hidden_layers >= 0, "num_hidden_layers", "must be >= 0"),
            (math.isfinite(self.rate_lambda) and self.rate_lambda >= 0, "rate_lambda", "must be >= 0"),
            (0.0 <= self.anneal_fraction <= 1.0, "anneal_fraction", "must be in [0, 1]"),
            (self.soft_round_alpha_start > 0, "soft_round_alpha_start", "must be > 0"),
            (self.soft_round_alpha_end >= self.soft_round_alpha_start, "soft_round_alpha_end", "must be >= start"),
            (self.quantizer in QUANTIZER_MODES, "quantizer", f"must be one of {QUANTIZER_MODES}"),
            (self.sga_temperature_end > 0, "sga_temperature_end", "must be > 0"),
            (self.sga_temperature_start >= self.sga_temperature_end, "sga_temperature_start", "must be >= end"),
            (self.batch_pixels >= 1, "batch_pixels", "must be >= 1"),
            (self.entropy_refit_steps >= 0, "entropy_refit_steps", "must be >= 0"),
            (0.0 <= self.lr_decay_start <= 1.0, "lr_decay_start", "must be in [0, 1]"),
            (self.lr_final_factor >= 0, "lr_final_factor", "must be >= 0"),
            (self.rate_lambda_start_factor >= 0, "rate_lambda_start_factor", "must be >= 0"),
            (self.implementation in LOOKUP_CHOICES, "implementation", f"must be one of {LOOKUP_CHOICES}"),
            (self.network_precision in NETWORK_PRECISIONS, "network_precision", f"must be one of {NETWORK_PRECISIONS}"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ImageConfigError(f"image setting {name} {rule}, got {getattr(self, name)!r}")
        for name in ("lr_mlp", "lr_decoder", "lr_latents", "lr_entropy"):
            if not getattr(self, name) >= 0:
                raise ImageConfigError(f"image setting {name} must be >= 0, got {getattr(self, name)!r}")

    def resolved(self, height: int, width: int) -> "ImageFieldConfig":
        """This config with ``max_res`` (and ``min_res`` if larger) fixed for an image of the given size."""
        max_res = self.max_res or max(int(height), int(width), 1)
        return dataclasses.replace(self, max_res=max_res, min_res=min(self.min_res, max_res))

    def geometry(self) -> GridGeometry:
        """The grid geometry (needs a resolved config: ``max_res`` > 0)."""
        if self.max_res < 1:
            raise ValueError("resolve the config for an image size first (max_res is 0)")
        return GridGeometry(2, self.num_levels, min(self.min_res, self.max_res), self.max_res, self.log2_hashmap_size)


KODAK_PRESET: Dict[str, object] = {
    "num_levels": 24,
    "max_res": 512,
    "log2_hashmap_size": 11,
    "hidden_dim": 16,
    "num_hidden_layers": 1,
    "lr_latents": 0.02,
    "lr_entropy": 1e-3,
    "rate_lambda_start_factor": 10.0,
    "lr_decay_start": 0.7,
    "lr_final_factor": 0.1,
    "batch_pixels": 2**20,
}
"""The settings benchmarks/image_kodak.py measures on Kodak (``shacira image compress --preset kodak``): the authors'
public Kodak config (24 levels of 2^11 rows up to resolution 512, one hidden layer of 16, rate weight decaying from
10x), whole-image steps, entropy model at 1e-3, and learning rates decayed over the last 30% instead of 60000 steps."""

ARCHITECTURE_FIELDS = (
    "num_levels", "min_res", "max_res", "log2_hashmap_size", "latent_dim", "feature_dim", "hidden_dim",
    "num_hidden_layers", "entropy_filters",
)  # fmt: skip
"""Config fields that determine the modules (what a file must store to rebuild the field)."""


def make_quantizer(config: ImageFieldConfig) -> AnnealedQuantizer:
    """The rounding schedule a config selects (``ImageField`` and the batched fit build theirs here)."""
    return AnnealedQuantizer(
        config.soft_round_alpha_start,
        config.soft_round_alpha_end,
        config.anneal_fraction,
        mode=config.quantizer,
        temperature_start=config.sga_temperature_start,
        temperature_end=config.sga_temperature_end,
    )


def schedule_factors(config: ImageFieldConfig, step: int, steps: int) -> Tuple[float, float]:
    """(learning-rate multiplier, rate-weight multiplier) at ``step`` of ``steps`` (1.0, 1.0 with the defaults)."""
    t = step / max(steps, 1)
    lr = 1.0
    if t > config.lr_decay_start and config.lr_decay_start < 1.0:
        u = (t - config.lr_decay_start) / (1.0 - config.lr_decay_start)
        lr = config.lr_final_factor + (1.0 - config.lr_final_factor) * 0.5 * (1.0 + math.cos(math.pi * u))
    f = config.rate_lambda_start_factor
    rate = 1.0 + (f - 1.0) * 0.5 * (1.0 + math.cos(math.pi * t))
    return lr, rate


def stored_network_bits(config: ImageFieldConfig, numels: Iterable[int]) -> float:
    """Bits a file spends on network tensors of ``numels`` numbers each at the config's storage precision (the size
    estimates of a field and of a training batch share it)."""
    return 8.0 * stored_network_bytes(numels, config.network_precision)


def pixel_centres(height: int, width: int, device: Union[str, torch.device] = "cpu") -> Float[Tensor, "hw 2"]:
    """Coordinates ((i + 0.5) / h, (j + 0.5) / w) of every pixel (i, j), row-major: the points the field is fit at."""
    rows = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
    cols = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)


def build_mlp(in_dim: int, hidden_dim: int, num_hidden_layers: int, out_dim: int = 3) -> nn.Sequential:
    """ReLU MLP with Xavier-uniform weights and zero biases (appendix sec. 2)."""
    widths = [in_dim] + [hidden_dim] * num_hidden_layers + [out_dim]
    layers: list = []
    for i in range(len(widths) - 1):
        linear = nn.Linear(widths[i], widths[i + 1])
        nn.init.xavier_uniform_(linear.weight)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ImageField(nn.Module):
    """A SHACIRA grid over [0, 1]^2 plus an MLP to RGB, for an image of ``height`` x ``width`` pixels.

    Args:
        config: the settings; ``max_res`` 0 is resolved to max(height, width).
        height: pixel rows of the image the field represents (its native rendering size).
        width: pixel columns.
        device: where the field will run (its grid's lookup backend is chosen for it).
    """

    def __init__(
        self, config: ImageFieldConfig, height: int, width: int, device: Union[str, torch.device] = "cpu"
    ) -> None:
        super().__init__()
        if height < 1 or width < 1:
            raise ImageConfigError(f"image must have at least one pixel, got {height}x{width}")
        self.config = config.resolved(height, width)
        self.height = int(height)
        self.width = int(width)
        cfg = self.config
        quantizer = make_quantizer(cfg)
        self.grid = ShaciraGrid(
            cfg.geometry(), cfg.latent_dim, cfg.feature_dim, quantizer=quantizer,
            entropy_filters=tuple(cfg.entropy_filters), implementation=cfg.implementation, device=device,
        )  # fmt: skip
        self.mlp = build_mlp(self.grid.get_out_dim(), cfg.hidden_dim, cfg.num_hidden_layers)

    def rgb_from_features(self, features: Float[Tensor, "n f"]) -> Float[Tensor, "n 3"]:
        """The MLP head: grid features to RGB in [0, 1] (a sigmoid keeps every output a valid colour)."""
        return torch.sigmoid(self.mlp(features))

    def forward(self, x: Float[Tensor, "n 2"], quantized: Optional[Tensor] = None) -> Float[Tensor, "n 3"]:
        """RGB at points ``x`` in [0, 1]^2 (row coordinate first); ``quantized``: this training step's latent table
        from ``grid.lookup_latents`` (default: quantize now)."""
        return self.rgb_from_features(self.grid(x, quantized))

    @torch.no_grad()
    def render(self, height: Optional[int] = None, width: Optional[int] = None) -> Float[Tensor, "h w 3"]:
        """RGB at the pixel centres of a ``height`` x ``width`` grid (default: the native size), in chunks.

        A larger size than the native one samples the same continuous field more densely: super-resolution.
        """
        h = self.height if height is None else int(height)
        w = self.width if width is None else int(width)
        device = self.grid.latents.values.device
        out = torch.empty(h * w, 3, device=device)
        for start in range(0, h * w, RENDER_CHUNK):
            x = _pixel_centres_range(h, w, start, min(start + RENDER_CHUNK, h * w), device)
            out[start : start + x.shape[0]] = self(x)
        return out.reshape(h, w, 3)

    @torch.no_grad()
    def level_features(self, height: int, width: int) -> Float[Tensor, "levels h w f"]:
        """Decoded features of every level at the pixel centres of a ``height`` x ``width`` grid (Figure 4)."""
        levels, f = self.config.num_levels, self.config.feature_dim
        device = self.grid.latents.values.device
        out = torch.empty(height * width, levels * f, device=device)
        for start in range(0, height * width, RENDER_CHUNK):
            x = _pixel_centres_range(height, width, start, min(start + RENDER_CHUNK, height * width), device)
            out[start : start + x.shape[0]] = self.grid(x)
        return out.reshape(height, width, levels, f).permute(2, 0, 1, 3)

    def network_tensors(self) -> Dict[str, Tensor]:
        """The float tensors an image file stores besides the coded latents: the latent decoder and the MLP.

        The latents are entropy-coded and the entropy model travels as its integer tables, so neither is here.
        """
        out = {f"decoder.{name}": p.detach() for name, p in self.grid.decoder.named_parameters()}
        out.update({f"mlp.{name}": p.detach() for name, p in self.mlp.named_parameters()})
        return out

    @torch.no_grad()
    def round_networks(self) -> None:
        """Round the decoder and MLP weights to the storage precision (``network_precision``), in place.

        Called once fitting ends: the file then stores these weights exactly, and what was measured is what decodes.
        """
        round_to_precision_(self.network_tensors().values(), self.config.network_precision)

    def num_latents(self) -> int:
        """Scalar latents of the grid (the count the rate is normalised by)."""
        return self.grid.latents.num_latents

    def num_network_floats(self) -> int:
        """Float32 numbers the file stores for the networks."""
        return sum(t.numel() for t in self.network_tensors().values())

    @torch.no_grad()
    def estimate_bits(self) -> Dict[str, float]:
        """Training-time size estimate: hard-rounded latents under the entropy model plus the stored networks.

        Like the coder, it renormalises the probabilities over the integers actually used; it leaves out the
        16-bit quantization of the stored tables, the range coder's last bytes and the header, so the file is
        slightly larger (the file is the truth).
        """
        bits = self.grid.entropy_model.estimate_bits(torch.round(self.grid.latents.values))
        network_bits = stored_network_bits(self.config, [t.numel() for t in self.network_tensors().values()])
        pixels = self.height * self.width
        return {
            "latent_bits": bits,
            "network_bits": network_bits,
            "bits_per_latent": bits / max(self.num_latents(), 1),
            "bpp": (bits + network_bits) / pixels,
        }


def _pixel_centres_range(height: int, width: int, start: int, stop: int, device: torch.device) -> Tensor:
    """Rows ``start:stop`` of ``pixel_centres(height, width)`` without building the whole grid (same floats)."""
    index = torch.arange(start, stop, device=device)
    rows = (torch.div(index, width, rounding_mode="floor").float() + 0.5) / height
    cols = (torch.remainder(index, width).float() + 0.5) / width
    return torch.stack([rows, cols], dim=-1)
