"""The one image trainer: a batch of ImageFields (B=1 for ``fit_image``) fitted with Adam on MSE + lambda x bits per
latent, with quantizer annealing.

The appendix trains all parameters jointly with Adam, one learning rate per kind (sec. 2): MLP 1e-3, decoder 0.01,
latents 0.01, entropy model 1e-4. The rate term is normalised per latent as in the NeRF model (appendix eq. 3):
``loss = MSE + rate_lambda * bits / num_latents``; the soft-rounding sharpness (or the SGA temperature) anneals over
``anneal_fraction`` of the steps, straight-through rounding after. The latents are quantized once per step and that
table feeds both the pixels and the rate, so with SGA both see the same random sample (drawn from a generator seeded
from the member's seed: a fit stays deterministic). At the end each member's entropy model alone is refit to its
final integer latents (``EntropyModel.refit``): the file's probability tables come from it, and at the appendix's
1e-4 it is still far from the latents' histogram after a few thousand steps.

A batch trains as one stacked model (``batch.BatchedImageFields``) on core's modules: the batch's loss is the sum
of its members' losses, so each member's gradients and Adam steps are its own. The pixels are looked up through
core's lookup seam (``pixel_lookup``: a sparse matrix for whole-image steps, cached corners for random pixels).
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch
from jaxtyping import Float
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor

from shacira_nerf.core.entropy_model import REFIT_LR
from shacira_nerf.image.batch import BatchedImageFields
from shacira_nerf.image.field import ImageField, ImageFieldConfig, schedule_factors
from shacira_nerf.image.pixel_lookup import PixelLookup

ProgressCallback = Callable[[int, Tensor], None]
"""Called as ``callback(step, mse_per_member)`` every ``log_every`` steps (mse: float32 [B], detached)."""

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


def make_optimizer(batch: BatchedImageFields, fused: bool = False) -> torch.optim.Adam:
    """Adam with one parameter group (and learning rate) per kind of parameter, as in the appendix (``fused``: the
    one-kernel CUDA implementation)."""
    cfg = batch.configs[0]
    groups = [
        {"name": "mlp", "params": list(batch.mlp.parameters()), "lr": cfg.lr_mlp},
        {"name": "decoder", "params": list(batch.decoder.parameters()), "lr": cfg.lr_decoder},
        {"name": "latents", "params": [batch.latents.values], "lr": cfg.lr_latents},
        {"name": "entropy", "params": list(batch.entropy_model.parameters()), "lr": cfg.lr_entropy},
    ]
    return torch.optim.Adam(groups, **({"fused": True} if fused else {}))


def image_to_tensor(image: np.ndarray, device: torch.device) -> Float[Tensor, "hw 3"]:
    """uint8 HxWx3 to float32 [0, 1] pixels, row-major (the order of ``pixel_centres``)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {image.dtype} {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image has no pixels: {image.shape}")
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).to(device).reshape(-1, 3).float() / 255.0


def fit_images(
    images: Sequence[np.ndarray],
    configs: Sequence[ImageFieldConfig],
    steps: int = 2000,
    device: Union[str, torch.device] = "cpu",
    seed: int = 0,
    member_seeds: Optional[Sequence[int]] = None,
    log_every: int = 0,
    callback: Optional[ProgressCallback] = None,
    progress: bool = False,
) -> List[ImageField]:
    """Fit member ``i`` (image ``images[i]`` with ``configs[i]``) for every i at once; returns eval-mode ImageFields.

    Member ``i`` is initialised under its seed ``member_seeds[i]`` (default: ``seed`` for all), sees the random
    pixels drawn from ``seed`` (shared by the batch) and, with SGA, its own noise (drawn from its seed), and its
    entropy model is refit alone at the end: so a member's result does not depend on the other members' images or
    rate weights, and a member equals ``fit_image`` of its image, config and seed. Deterministic on CPU for given
    seeds (on CUDA the scatter-adds of the backward pass are not).

    ``callback(step, mse_per_member)`` runs every ``log_every`` steps and at the last one; ``progress`` shows a rich
    bar with the mean training-batch PSNR (and, for one member, the estimated bpp: networks at their storage
    precision + latents under the entropy model; the file adds its headers).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if len(images) != len(configs) or not images:
        raise ValueError(f"need one config per image, got {len(images)} images and {len(configs)} configs")
    seeds = [seed] * len(images) if member_seeds is None else [int(s) for s in member_seeds]
    if len(seeds) != len(images):
        raise ValueError("need one seed per member")
    device = resolve_device(device)
    h, w = int(images[0].shape[0]), int(images[0].shape[1])
    if any(tuple(im.shape[:2]) != (h, w) for im in images):
        raise ValueError("all images of a batch must have the same height and width (group them by shape)")
    targets = torch.stack([image_to_tensor(im, device) for im in images])  # [B, hw, 3]
    fields = []
    for config, member_seed in zip(configs, seeds):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(member_seed)
            fields.append(ImageField(config, h, w, device=device))
    cfg = fields[0].config
    fused_rate = fields[0].grid.fused_rate
    batch = BatchedImageFields(fields, fused_rate=fused_rate).to(device)
    del fields
    batch.train()
    full_batch = h * w <= cfg.batch_pixels
    lookup = PixelLookup(batch.geometries, h, w, device, cfg.implementation, whole_image=full_batch)
    optimizer = make_optimizer(batch, fused=device.type == "cuda")
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    rate_lambda = torch.tensor([c.rate_lambda for c in batch.configs], device=device)
    use_rate = bool((rate_lambda > 0).any())
    rate_scale = rate_lambda / batch.num_latents
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    noise_generators = [sga_noise_generator(s, device) for s in seeds]

    bar = _progress_bar(progress)
    task = bar.add_task("fitting", total=steps, psnr=float("nan"), bpp=float("nan"))
    with bar:
        for step in range(steps):
            batch.set_progress(step, steps)
            rate_factor = apply_schedule(optimizer, base_lrs, cfg, step, steps)
            index = (
                None if full_batch else torch.randint(0, h * w, (cfg.batch_pixels,), device=device, generator=generator)
            )
            q = batch.quantized(noise_generators)  # one table (one SGA sample) per step, for pixels and rate
            rgb = batch.rgb(lookup(q, index))
            mse = ((rgb - (targets if index is None else targets[:, index])) ** 2).mean(dim=(1, 2))
            loss = mse.sum()
            if use_rate:
                loss = loss + (rate_scale * rate_factor * batch.rate_bits(q)).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if callback is not None and log_every > 0 and (step % log_every == 0 or step == steps - 1):
                callback(step, mse.detach())
            if progress:
                shown = {"psnr": sum(psnr_from_mse(mse.detach())) / batch.members}
                if step % ESTIMATE_EVERY == 0 or step == steps - 1:
                    bpp = batch.estimate_bpp()
                    shown["bpp"] = float("nan") if bpp is None else bpp
                bar.update(task, advance=1, **shown)
    batch.set_progress(steps, steps)
    batch.eval()
    out = []
    for i in range(batch.members):
        field = batch.member(i)
        refit_entropy_model(field, field.config.entropy_refit_steps)
        field.eval()
        out.append(field)
    return out


def fit_image(
    image: np.ndarray,
    config: ImageFieldConfig,
    steps: int = 2000,
    device: Union[str, torch.device] = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> ImageField:
    """Fit an ImageField to a uint8 HxWx3 image; returns it in eval mode (hard-rounded latents, as stored).

    A batch of one of ``fit_images`` (the one trainer): deterministic for a given seed on CPU; ``progress`` shows a
    rich bar with the training-batch PSNR and the estimated bpp.
    """
    return fit_images([image], [config], steps, device, seed, progress=progress)[0]


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


def psnr_from_mse(mse: Tensor) -> List[float]:
    """PSNR (dB, peak 1) of each member's training-batch MSE, for progress lines."""
    return [-10.0 * math.log10(max(float(m), 1e-12)) for m in mse.reshape(-1).cpu()]
