"""Fitting an ImageField to one image: Adam on MSE + lambda x bits per latent, with quantizer annealing.

The appendix trains all parameters jointly with Adam, one learning rate per kind (sec. 2): MLP 1e-3, decoder 0.01,
latents 0.01, entropy model 1e-4. The rate term is normalised per latent as in the NeRF model (appendix eq. 3):
``loss = MSE + rate_lambda * bits / num_latents``; the soft-rounding sharpness (or the SGA temperature) anneals over
``anneal_fraction`` of the steps, straight-through rounding after. The latents are quantized once per step and that
table feeds both the pixels and the rate, so with SGA both see the same random sample (drawn from a generator seeded
from the fit's seed: a fit stays deterministic). At the end the entropy model alone is refit to the final integer
latents (``refit_entropy_model``): the file's probability tables come from it, and at the appendix's 1e-4 it is
still far from the latents' histogram after a few thousand steps.

The training pixels never change, so on the pure-torch path the hash-grid corner rows and interpolation weights of
every pixel are computed once (``PixelCorners``) instead of at every step: the same numbers as ``ShaciraGrid.forward``
at a fraction of the CPU time.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np
import torch
from jaxtyping import Float, Int
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor

from shacira_nerf.core.entropy_model import REFIT_LR
from shacira_nerf.core.hash_grid import corner_indices_and_weights
from shacira_nerf.core.lookup import MatrixLookup
from shacira_nerf.image.field import ImageField, ImageFieldConfig, pixel_centres, schedule_factors

CORNER_CACHE_BYTES = 2 * 1024**3
"""Largest corner cache (rows + weights of every pixel) kept for training; beyond it corners are recomputed."""

ESTIMATE_EVERY = 50
"""Steps between updates of the (estimated) bpp shown in the progress bar."""


SGA_STREAM = 0x56A
"""Mixed with a fit's seed to seed its SGA noise generator (apart from the pixel sampler's, seeded with the seed)."""


def apply_schedule(
    optimizer: torch.optim.Optimizer, base_lrs: Sequence[float], config: ImageFieldConfig, step: int, steps: int
) -> float:
    """Set every parameter group's learning rate for ``step`` of ``steps``; returns the rate-weight multiplier."""
    lr_factor, rate_factor = schedule_factors(config, step, steps)
    for group, lr in zip(optimizer.param_groups, base_lrs):
        group["lr"] = lr * lr_factor
    return rate_factor


def sga_noise_generator(seed: int, device: torch.device) -> torch.Generator:
    """The generator of a fit's SGA noise (one uniform per latent and step), derived from the fit's seed.

    Not seeded with the seed itself: the pixel sampler is, and two generators with one seed give the same numbers.
    """
    state = np.random.SeedSequence([int(seed) % 2**64, SGA_STREAM]).generate_state(1, np.uint64)[0]
    generator = torch.Generator(device=device)
    generator.manual_seed(int(state))
    return generator


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (peak 255), over all pixels and channels; inf if they are equal."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def to_uint8(rgb: Float[Tensor, "h w 3"]) -> np.ndarray:
    """Float RGB in [0, 1] to the uint8 image a user gets (round half to even, like torch.round)."""
    return torch.round(rgb.clamp(0.0, 1.0) * 255.0).to(torch.uint8).cpu().numpy()


def resolve_device(device: Union[str, torch.device]) -> torch.device:
    """A torch device; "auto" means CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class PixelCorners:
    """Corner rows and interpolation weights of every training pixel at every level, computed once.

    ``features(index)`` equals ``grid(pixel_centres(h, w)[index])`` on the pure-torch path (the same gather and
    weighted sum as ``hash_grid_interpolate``, then the per-level decoder), so training is unchanged, only faster.
    With ``whole_image`` (every step sees every pixel) the lookup is core's fixed-point backend instead
    (``lookup.MatrixLookup``: the same numbers up to summation order, and a backward pass without atomics).
    """

    def __init__(self, field: ImageField, device: torch.device, whole_image: bool = False) -> None:
        self.grid = field.grid
        x = pixel_centres(field.height, field.width, device)
        self.matrix = MatrixLookup(field.grid.geometry, x) if whole_image else None
        if self.matrix is None:
            rows, weights = corner_indices_and_weights(x, field.grid.geometry)
            self.rows: Int[Tensor, "hw levels corners"] = rows
            self.weights: Float[Tensor, "hw levels corners"] = weights

    @staticmethod
    def fits(field: ImageField) -> bool:
        """Whether the cache for this image stays under ``CORNER_CACHE_BYTES`` (int64 rows + float32 weights; the
        sparse matrix and its transpose take about twice that)."""
        per_pixel = field.config.num_levels * 4 * (8 + 4)
        return field.height * field.width * per_pixel <= CORNER_CACHE_BYTES

    def features(
        self, index: Optional[Tensor] = None, quantized: Optional[Tensor] = None
    ) -> Float[Tensor, "n levels_times_f"]:
        """Grid features of the pixels ``index`` (all pixels if None), differentiable in latents and decoder.

        ``quantized``: this step's latent table from ``grid.lookup_latents`` (default: quantize now).
        """
        table = self.grid.lookup_latents() if quantized is None else quantized
        if self.matrix is not None:
            if index is not None:
                raise ValueError("a whole-image PixelCorners serves every pixel at once (index must be None)")
            return self.grid.decoder.per_level(self.matrix(table))
        rows = self.rows if index is None else self.rows[index]
        weights = self.weights if index is None else self.weights[index]
        flat = rows.reshape(-1)
        channels = [
            (torch.index_select(table[:, k], 0, flat).view_as(weights) * weights).sum(-1) for k in range(table.shape[1])
        ]
        return self.grid.decoder.per_level(torch.stack(channels, dim=-1))


def make_optimizer(field: ImageField) -> torch.optim.Adam:
    """Adam with one parameter group (and learning rate) per kind of parameter, as in the appendix."""
    cfg = field.config
    groups = [
        {"name": "mlp", "params": list(field.mlp.parameters()), "lr": cfg.lr_mlp},
        {"name": "decoder", "params": list(field.grid.decoder.parameters()), "lr": cfg.lr_decoder},
        {"name": "latents", "params": [field.grid.latents.values], "lr": cfg.lr_latents},
        {"name": "entropy", "params": list(field.grid.entropy_model.parameters()), "lr": cfg.lr_entropy},
    ]
    return torch.optim.Adam(groups)


def image_to_tensor(image: np.ndarray, device: torch.device) -> Float[Tensor, "hw 3"]:
    """uint8 HxWx3 to float32 [0, 1] pixels, row-major (the order of ``pixel_centres``)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {image.dtype} {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image has no pixels: {image.shape}")
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).to(device).reshape(-1, 3).float() / 255.0


def fit_image(
    image: np.ndarray,
    config: ImageFieldConfig,
    steps: int = 2000,
    device: Union[str, torch.device] = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> ImageField:
    """Fit an ImageField to a uint8 HxWx3 image; returns it in eval mode (hard-rounded latents, as stored).

    Deterministic for a given seed on CPU: the initialisation runs under a forked, seeded RNG and the pixel
    sampling and the SGA noise use their own seeded generators (on CUDA the scatter-adds of the backward pass are not
    deterministic). ``progress`` shows a rich bar with the training-batch PSNR and the estimated bpp (networks as
    float32 + latents under the entropy model; the file adds its headers).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = resolve_device(device)
    h, w = int(image.shape[0]), int(image.shape[1])
    target = image_to_tensor(image, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        field = ImageField(config, h, w, device=device)
    field = field.to(device)
    field.train()
    optimizer = make_optimizer(field)
    full_batch = h * w <= field.config.batch_pixels
    fixed_corners = field.grid.implementation == "torch" or full_batch  # tcnn/triton gather faster than cached rows
    corners = (
        PixelCorners(field, device, whole_image=full_batch) if fixed_corners and PixelCorners.fits(field) else None
    )
    coords = None if corners is not None else pixel_centres(h, w, device)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    noise_generator = sga_noise_generator(seed, device)
    num_latents = field.num_latents()
    rate_lambda = field.config.rate_lambda

    base_lrs = [group["lr"] for group in optimizer.param_groups]

    bar = _progress_bar(progress)
    task = bar.add_task("fitting", total=steps, psnr=float("nan"), bpp=float("nan"))
    with bar:
        for step in range(steps):
            field.grid.set_progress(step, steps)
            rate_factor = apply_schedule(optimizer, base_lrs, field.config, step, steps)
            index = (
                None
                if full_batch
                else torch.randint(0, h * w, (field.config.batch_pixels,), device=device, generator=generator)
            )
            q = field.grid.lookup_latents(generator=noise_generator)  # one table (one SGA sample) per step
            if corners is not None:
                rgb = field.rgb_from_features(corners.features(index, q))
            else:
                rgb = field(coords if index is None else coords[index], q)
            mse = torch.mean((rgb - (target if index is None else target[index])) ** 2)
            loss = mse
            if rate_lambda > 0:
                loss = loss + rate_lambda * rate_factor * field.grid.rate_bits(q) / num_latents
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if progress:
                fields = {"psnr": -10.0 * math.log10(max(float(mse.detach()), 1e-12))}
                if step % ESTIMATE_EVERY == 0 or step == steps - 1:
                    fields["bpp"] = field.estimate_bits()["bpp"]
                bar.update(task, advance=1, **fields)
    field.grid.set_progress(steps, steps)
    field.round_networks()  # to the file's precision: what is measured from here on is what decodes
    refit_entropy_model(field, field.config.entropy_refit_steps)
    field.eval()
    return field


def refit_entropy_model(field: ImageField, steps: int, lr: float = REFIT_LR) -> None:
    """Fit the entropy model alone to the final integer latents (``EntropyModel.refit``); leaves the latents and the
    rendering untouched."""
    field.grid.entropy_model.refit(torch.round(field.grid.latents.values.detach()), steps, lr)


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("PSNR {task.fields[psnr]:6.2f} dB (batch)"),
        TextColumn("bpp≈{task.fields[bpp]:.4f} (estimate)"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )
