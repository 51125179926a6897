"""Fitting many images (or many settings) at once: B independent ImageFields trained as stacked tensors.

Why: a single 768x512 fit is launch-bound on a GPU (a few ms per step of tiny kernels), so 24 Kodak images x several
rate weights one after another do not fit in minutes. Here every parameter of every member (latents, per-level
decoder, MLP, entropy model) is one slice of a stacked tensor, and one step runs the same kernels for the whole batch:
the loss is the sum over members of each member's ``fit_image`` loss (MSE + rate_lambda x bits / latents), so the
gradients (and Adam, which is element-wise) stay independent per member. On CPU a member's result does not depend on
the other members' images.

Members must share the image shape, the number of levels, the grid resolutions, the feature dimension, the MLP depth,
the entropy-model shape and every training setting except ``rate_lambda``. They may differ in
``log2_hashmap_size``, ``latent_dim`` and ``hidden_dim``: smaller members are zero-padded to the largest one. Padding
is exact: padded hidden units have zero weights in and out (ReLU's gradient at 0 is 0, so they stay zero), padded
latent columns meet zero decoder rows, and padded table rows and columns are masked out of the rate, so none of them
ever receives a gradient. When every step sees the whole image and all members share the grid geometry, the lookup is
one sparse matrix (``InterpolationMatrix``) applied to all members' tables as columns; otherwise the corner rows of
every pixel are gathered (shared rows when the geometry is shared, else each member's own).

With SGA (``quantizer="sga"``) every member draws its noise from its own generator (``sga_noise_generator`` of its
member seed), in its own unpadded shape, and the draws are then padded: a member's random numbers are those of its
solo ``fit_image`` and do not depend on the other members.

After fitting, the entropy models are refit to the final integer latents (all members at once, a fixed number of
steps so that members stay independent), and every member is copied into a standard ``ImageField``, which
``encode_image_file`` writes like any other.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from shacira_nerf.core.decoder import affine_per_level
from shacira_nerf.core.entropy_model import REFIT_LR, FactorizedEntropyModel
from shacira_nerf.core.hash_grid import corner_indices_and_weights
from shacira_nerf.core.lookup import MatrixLookup
from shacira_nerf.image.field import ImageField, ImageFieldConfig, make_quantizer, pixel_centres
from shacira_nerf.image.train import apply_schedule, image_to_tensor, resolve_device, sga_noise_generator

PADDABLE_FIELDS = ("log2_hashmap_size", "latent_dim", "hidden_dim", "rate_lambda")
"""Config fields that may differ between members of one batch (everything else must be equal)."""

ProgressCallback = Callable[[int, Tensor], None]
"""Called as ``callback(step, mse_per_member)`` every ``log_every`` steps (mse: float32 [B], detached)."""


def compatible(a: ImageFieldConfig, b: ImageFieldConfig) -> bool:
    """Whether two configs can share a batch (equal in everything but ``PADDABLE_FIELDS``)."""
    return all(
        getattr(a, f.name) == getattr(b, f.name)
        for f in dataclasses.fields(ImageFieldConfig)
        if f.name not in PADDABLE_FIELDS
    )


def _linears(field: ImageField) -> List[nn.Linear]:
    return [m for m in field.mlp if isinstance(m, nn.Linear)]


class BatchedImageFields(nn.Module):
    """B image fields as stacked, zero-padded tensors (see the module docstring for the padding rules).

    Args:
        fields: the members, already initialised (their parameters are copied in); same image size.
    """

    def __init__(self, fields: Sequence[ImageField]) -> None:
        super().__init__()
        if not fields:
            raise ValueError("a batch needs at least one field")
        first = fields[0]
        for f in fields[1:]:
            if (f.height, f.width) != (first.height, first.width) or not compatible(f.config, first.config):
                raise ValueError(
                    "batch members need the same image size and settings (except table size, latent dim, width)"
                )
        self.members = len(fields)
        self.configs = [f.config for f in fields]
        self.height, self.width = first.height, first.width
        self.geometries = [f.grid.geometry for f in fields]
        self.level_sizes = [f.grid.latents.level_sizes for f in fields]
        self.num_rows = [f.grid.latents.num_rows for f in fields]
        self.latent_dims = [f.config.latent_dim for f in fields]
        B, L, F = self.members, first.config.num_levels, first.config.feature_dim
        R = max(f.grid.latents.num_rows for f in fields)
        D = max(self.latent_dims)
        self.max_latent_dim = D
        self.padded = any(f.grid.latents.values.shape != (R, D) for f in fields)
        with torch.no_grad():
            latents = torch.zeros(B, R, D)
            mask = torch.zeros(B, R, D)
            dec_w = torch.zeros(B, L, D, F)
            dec_b = torch.zeros(B, L, F)
            for i, f in enumerate(fields):
                rows, d = f.grid.latents.values.shape
                latents[i, :rows, :d] = f.grid.latents.values
                mask[i, :rows, :d] = 1.0
                dec_w[i, :, :d] = f.grid.decoder.weight
                dec_b[i] = f.grid.decoder.bias
            self.latents = nn.Parameter(latents)
            self.decoder_weight = nn.Parameter(dec_w)
            self.decoder_bias = nn.Parameter(dec_b)
            self.register_buffer("rate_mask", mask, persistent=False)
            self.register_buffer(
                "num_latents", torch.tensor([float(f.num_latents()) for f in fields]), persistent=False
            )
            layer_lists = [_linears(f) for f in fields]
            self.mlp_weights = nn.ParameterList()
            self.mlp_biases = nn.ParameterList()
            for k in range(len(layer_lists[0])):
                fan_in = max(ls[k].in_features for ls in layer_lists)
                fan_out = max(ls[k].out_features for ls in layer_lists)
                w = torch.zeros(B, fan_in, fan_out)
                b = torch.zeros(B, fan_out)
                for i, ls in enumerate(layer_lists):
                    w[i, : ls[k].in_features, : ls[k].out_features] = ls[k].weight.t()
                    b[i, : ls[k].out_features] = ls[k].bias
                self.mlp_weights.append(nn.Parameter(w))
                self.mlp_biases.append(nn.Parameter(b))
            # One entropy model with B x D channels: channel i * D + d models latent column d of member i.
            self.entropy_model = FactorizedEntropyModel(B * D, tuple(first.config.entropy_filters))
            for name, stacked in self.entropy_model.named_parameters():
                for i, f in enumerate(fields):
                    member = dict(f.grid.entropy_model.named_parameters())[name]
                    stacked[i * D : i * D + member.shape[0]] = member
        self.quantizer = make_quantizer(first.config)

    @property
    def shares_geometry(self) -> bool:
        """Whether all members have one grid geometry (then they share every pixel's corner rows)."""
        return all(g == self.geometries[0] for g in self.geometries)

    def sga_noise(self, generators: Sequence[torch.Generator]) -> Optional[Float[Tensor, "b rows d"]]:
        """This step's SGA uniforms, member i's drawn from ``generators[i]`` in its unpadded shape (as its solo fit
        draws them), then padded; None when the quantizer does not sample now (nothing is drawn then)."""
        if not self.quantizer.sampling:
            return None
        if len(generators) != self.members:
            raise ValueError(f"need one SGA noise generator per member, got {len(generators)} for {self.members}")
        latents = self.latents.detach()
        noise = torch.full_like(latents, 0.5)  # padding: masked out of the lookup and the rate anyway
        for i, generator in enumerate(generators):
            shape = (self.num_rows[i], self.latent_dims[i])
            noise[i, : shape[0], : shape[1]] = torch.rand(
                shape, generator=generator, device=latents.device, dtype=latents.dtype
            )
        return noise

    def quantized(self, noise: Optional[Tensor] = None) -> Float[Tensor, "b rows d"]:
        """The latents as training sees them now (annealed/straight-through rounded; rounded in eval mode).

        ``noise``: the SGA uniforms of this step (``sga_noise``); None draws them from torch's global RNG.
        Padding is masked to exact zeros: soft rounding maps 0 to about 1e-8, not 0 (its float32 tanh and the
        float64 normaliser differ in the last bit), SGA maps it into (0, 1), and Adam would blow such a gradient up
        into real updates of the padded decoder rows.
        """
        q = self.quantizer(self.latents, noise=noise)
        return q * self.rate_mask if self.padded else q

    def set_progress(self, step: int, steps: int) -> None:
        """Move the rounding schedule to ``step`` of ``steps`` (the same schedule as ``fit_image``'s)."""
        self.quantizer.set_progress(step, steps)

    def rate_bits(self, q: Float[Tensor, "b rows d"]) -> Float[Tensor, " b"]:
        """Bits of each member's (unpadded) quantized latents under its entropy model, float32."""
        B, R, D = q.shape
        x = q.permute(1, 0, 2).reshape(R, B * D)
        with torch.autocast(device_type=q.device.type, enabled=False):
            bits = -torch.log2(self.entropy_model.likelihood(x.float())).view(R, B, D)
            return (bits * self.rate_mask.permute(1, 0, 2)).sum(dim=(0, 2))

    def rgb(self, interpolated: Float[Tensor, "b n levels d"]) -> Float[Tensor, "b n 3"]:
        """RGB of each member from its latents interpolated per level (``_Corners`` or ``_MatrixLookup``): the
        decode-then-MLP path of ``PixelCorners.features`` and ``ImageField``."""
        # Broadcast products (not a matmul with inner dimension 1-2, see core/decoder.py): contiguous [B, n, L, F].
        h = affine_per_level(interpolated, self.decoder_weight, self.decoder_bias, broadcast=True)
        h = h.reshape(h.shape[0], h.shape[1], -1)
        last = len(self.mlp_weights) - 1
        for k, (w, b) in enumerate(zip(self.mlp_weights, self.mlp_biases)):
            h = torch.baddbmm(b.unsqueeze(1), h, w)
            if k < last:
                h = torch.relu(h)
        return torch.sigmoid(h)

    @torch.no_grad()
    def member(self, index: int) -> ImageField:
        """Member ``index`` as a standard ImageField (eval mode, on this module's device)."""
        with torch.random.fork_rng(devices=[]):  # the constructor's random init is overwritten; keep the RNG
            field = ImageField(self.configs[index], self.height, self.width).to(self.latents.device)
        rows, d = field.grid.latents.values.shape
        field.grid.latents.values.copy_(self.latents[index, :rows, :d])
        field.grid.decoder.weight.copy_(self.decoder_weight[index, :, :d])
        field.grid.decoder.bias.copy_(self.decoder_bias[index])
        for k, linear in enumerate(_linears(field)):
            linear.weight.copy_(self.mlp_weights[k][index, : linear.in_features, : linear.out_features].t())
            linear.bias.copy_(self.mlp_biases[k][index, : linear.out_features])
        D = self.max_latent_dim
        stacked = dict(self.entropy_model.named_parameters())
        for name, p in field.grid.entropy_model.named_parameters():
            p.copy_(stacked[name][index * D : index * D + p.shape[0]])
        field.grid.set_progress(1, 1)
        field.round_networks()  # as fit_image does: the file stores these weights exactly
        field.eval()
        return field


class _Corners:
    """Random-pixel steps (or members of different table sizes): corner rows (per distinct geometry) and
    interpolation weights (shared) of every pixel, computed once, gathered per step."""

    def __init__(self, batch: BatchedImageFields, device: torch.device) -> None:
        x = pixel_centres(batch.height, batch.width, device)
        geometries = batch.geometries[:1] if batch.shares_geometry else batch.geometries
        rows, weights = [], None
        for geometry in geometries:
            r, w = corner_indices_and_weights(x, geometry)
            rows.append(r)
            weights = w if weights is None else weights
            if not torch.equal(w, weights):
                raise ValueError("batch members must share the grid resolutions (only the table size may differ)")
        self.rows: Int[Tensor, "g hw levels corners"] = torch.stack(rows)
        self.weights: Float[Tensor, "hw levels corners"] = weights

    def interpolate(self, q: Float[Tensor, "b rows d"], index: Optional[Tensor]) -> Float[Tensor, "b n levels d"]:
        """Every member's quantized latents interpolated at the pixels ``index`` (None: all), per level."""
        rows, weights = (self.rows, self.weights) if index is None else (self.rows[:, index], self.weights[index])
        B, _, D = q.shape
        n, L, C = weights.shape
        if rows.shape[0] == 1:
            g = torch.index_select(q, 1, rows.reshape(-1))
        else:
            g = torch.gather(q, 1, rows.reshape(B, -1, 1).expand(B, n * L * C, D))
        return (g.view(B, n, L, C, D) * weights.unsqueeze(-1)).sum(3)


class _MatrixLookup:
    """Whole-image steps of members that share one grid geometry: core's fixed-point lookup backend
    (``lookup.MatrixLookup``, one sparse matrix) applied to all members' tables at once, stacked as columns."""

    def __init__(self, batch: BatchedImageFields, device: torch.device) -> None:
        self.matrix = MatrixLookup(batch.geometries[0], pixel_centres(batch.height, batch.width, device))

    @staticmethod
    def applies(batch: BatchedImageFields, full_batch: bool) -> bool:
        """Whether this lookup serves the batch: every step sees every pixel and all members share the geometry."""
        return full_batch and batch.shares_geometry

    def interpolate(self, q: Float[Tensor, "b rows d"], index: Optional[Tensor]) -> Float[Tensor, "b n levels d"]:
        """Every member's quantized latents interpolated at every pixel, per level (``index`` must be None)."""
        if index is not None:
            raise ValueError("the sparse-matrix lookup serves whole-image steps only")
        B, R, D = q.shape
        y = self.matrix(q.permute(1, 0, 2).reshape(R, B * D))  # [n, L, B * D]
        return y.view(y.shape[0], y.shape[1], B, D).permute(2, 0, 1, 3)


def fit_images(
    images: Sequence[np.ndarray],
    configs: Sequence[ImageFieldConfig],
    steps: int = 2000,
    device: Union[str, torch.device] = "cpu",
    seed: int = 0,
    member_seeds: Optional[Sequence[int]] = None,
    log_every: int = 0,
    callback: Optional[ProgressCallback] = None,
) -> List[ImageField]:
    """Fit member ``i`` (image ``images[i]`` with ``configs[i]``) for every i at once; returns eval-mode ImageFields.

    Member ``i`` is initialised exactly like ``fit_image(images[i], configs[i], seed=member_seeds[i])`` (default:
    ``seed`` for all) and sees the same random pixels at every step (drawn from ``seed``, shared by the batch) and,
    with SGA, the same noise (drawn from ``member_seeds[i]``, its own), so a batch of one follows ``fit_image``'s
    math; only float summation order differs. Deterministic on CPU for given seeds, and a member's result does not
    depend on the other members' images or rate weights.
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
    fields = []
    for config, member_seed in zip(configs, seeds):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(member_seed)
            fields.append(ImageField(config, h, w))
    batch = BatchedImageFields(fields).to(device)
    del fields
    batch.train()
    cfg = batch.configs[0]
    target = torch.stack([image_to_tensor(im, device) for im in images])  # [B, hw, 3]
    full_batch = h * w <= cfg.batch_pixels
    lookup = _MatrixLookup(batch, device) if _MatrixLookup.applies(batch, full_batch) else _Corners(batch, device)
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.Adam(
        [
            {"params": [*batch.mlp_weights, *batch.mlp_biases], "lr": cfg.lr_mlp},
            {"params": [batch.decoder_weight, batch.decoder_bias], "lr": cfg.lr_decoder},
            {"params": [batch.latents], "lr": cfg.lr_latents},
            {"params": list(batch.entropy_model.parameters()), "lr": cfg.lr_entropy},
        ],
        **fused,
    )
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    rate_lambda = torch.tensor([c.rate_lambda for c in batch.configs], device=device)
    use_rate = bool((rate_lambda > 0).any())
    rate_scale = rate_lambda / batch.num_latents
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    noise_generators = [sga_noise_generator(s, device) for s in seeds]
    for step in range(steps):
        batch.set_progress(step, steps)
        rate_factor = apply_schedule(optimizer, base_lrs, cfg, step, steps)
        index = None if full_batch else torch.randint(0, h * w, (cfg.batch_pixels,), device=device, generator=generator)
        q = batch.quantized(batch.sga_noise(noise_generators))
        rgb = batch.rgb(lookup.interpolate(q, index))
        mse = ((rgb - (target if index is None else target[:, index])) ** 2).mean(dim=(1, 2))
        loss = mse.sum()
        if use_rate:
            loss = loss + (rate_scale * rate_factor * batch.rate_bits(q)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if callback is not None and log_every > 0 and (step % log_every == 0 or step == steps - 1):
            callback(step, mse.detach())
    batch.set_progress(steps, steps)
    refit_entropy_models(batch, cfg.entropy_refit_steps)
    batch.eval()
    return [batch.member(i) for i in range(batch.members)]


def refit_entropy_models(batch: BatchedImageFields, steps: int, lr: float = REFIT_LR) -> None:
    """Refit every member's entropy model alone to its final integer latents (``refit_entropy_model``, batched).

    A fixed number of steps, without ``refit_entropy_model``'s early stop: a stop decided on the whole batch would
    make one member's file depend on the others.
    """
    if steps <= 0:
        return
    with torch.no_grad():
        q = torch.round(batch.latents)
    optimizer = torch.optim.Adam(batch.entropy_model.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            loss = batch.rate_bits(q).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def psnr_from_mse(mse: Tensor) -> List[float]:
    """PSNR (dB, peak 1) of each member's training-batch MSE, for progress lines."""
    return [-10.0 * math.log10(max(float(m), 1e-12)) for m in mse.cpu()]
