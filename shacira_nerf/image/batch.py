"""B image fields as one stacked model: what ``train.fit_images`` trains (``fit_image`` is its batch of one).

Why stacked: a single 768x512 fit is launch-bound on a GPU (a few ms per step of tiny kernels), so 24 Kodak images x
several rate weights one after another do not fit in minutes. Here every parameter of every member is one slice of a
stacked tensor held by core's modules (``StackedLatents``, a ``LatentDecoder`` stack, one ``FactorizedEntropyModel``
with a channel per member and latent column, the ``AnnealedQuantizer``), plus the RGB MLPs stacked here, so one step
runs the same kernels for the whole batch. The loss is the sum of the members' losses, so the gradients (and Adam,
which is element-wise) stay independent per member.

Members must share the image shape, the number of levels, the grid resolutions, the feature dimension, the MLP depth,
the entropy-model shape and every training setting except ``rate_lambda``. They may differ in
``log2_hashmap_size``, ``latent_dim`` and ``hidden_dim``: smaller members are zero-padded to the largest one. Padding
is exact: padded hidden units have zero weights in and out (ReLU's gradient at 0 is 0, so they stay zero), padded
latent columns are held at zero and meet zero decoder rows, and padded table rows and columns are masked out of the
rate, so none of them ever receives a gradient.

A member is built as an ``ImageField`` (under its own seed), stacked, trained, and written back into an
``ImageField`` (``member``), which ``encode_image_file`` writes like any other.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Union

import torch
from jaxtyping import Float
from torch import Tensor, nn

from shacira_nerf.core.decoder import LatentDecoder
from shacira_nerf.core.entropy_model import FactorizedEntropyModel
from shacira_nerf.core.latents import StackedLatents
from shacira_nerf.image.field import ImageField, ImageFieldConfig, make_quantizer, stored_network_bits

PADDABLE_FIELDS = ("log2_hashmap_size", "latent_dim", "hidden_dim", "rate_lambda")
"""Config fields that may differ between members of one batch (everything else must be equal)."""


def compatible(a: ImageFieldConfig, b: ImageFieldConfig) -> bool:
    """Whether two configs can share a batch (equal in everything but ``PADDABLE_FIELDS``)."""
    return all(
        getattr(a, f.name) == getattr(b, f.name)
        for f in dataclasses.fields(ImageFieldConfig)
        if f.name not in PADDABLE_FIELDS
    )


def _linears(mlp: nn.Sequential) -> List[nn.Linear]:
    return [m for m in mlp if isinstance(m, nn.Linear)]


class StackedMLP(nn.Module):
    """The members' ReLU MLPs as stacked ``[members, in, out]`` weights (zero-padded to the widest member), applied
    with one batched matmul per layer; returns the pre-sigmoid output, as ``ImageField.mlp`` does."""

    def __init__(self, mlps: Sequence[nn.Sequential]) -> None:
        super().__init__()
        layer_lists = [_linears(m) for m in mlps]
        if len({len(layers) for layers in layer_lists}) != 1:
            raise ValueError("stacked MLPs need the same depth")
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        with torch.no_grad():
            for k in range(len(layer_lists[0])):
                fan_in = max(layers[k].in_features for layers in layer_lists)
                fan_out = max(layers[k].out_features for layers in layer_lists)
                w, b = torch.zeros(len(mlps), fan_in, fan_out), torch.zeros(len(mlps), fan_out)
                for i, layers in enumerate(layer_lists):
                    w[i, : layers[k].in_features, : layers[k].out_features] = layers[k].weight.t()
                    b[i, : layers[k].out_features] = layers[k].bias
                self.weights.append(nn.Parameter(w))
                self.biases.append(nn.Parameter(b))

    def forward(self, h: Float[Tensor, "b n f"]) -> Float[Tensor, "b n 3"]:
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b.unsqueeze(1), h, w)
            if k < last:
                h = torch.relu(h)
        return h

    @torch.no_grad()
    def copy_member_to(self, index: int, mlp: nn.Sequential) -> None:
        """Write member ``index`` into an ``ImageField`` MLP of its own widths."""
        for k, linear in enumerate(_linears(mlp)):
            linear.weight.copy_(self.weights[k][index, : linear.in_features, : linear.out_features].t())
            linear.bias.copy_(self.biases[k][index, : linear.out_features])


class BatchedImageFields(nn.Module):
    """B image fields as one stacked model (see the module docstring for the padding rules).

    Args:
        fields: the members, already initialised (their parameters are copied in); same image size.
        fused_rate: compute a batch of one's rate with the fused Triton kernel (``EntropyModel.bits(fused=True)``, as
            a ``ShaciraGrid`` on the Triton backend does).
    """

    def __init__(self, fields: Sequence[ImageField], fused_rate: bool = False) -> None:
        super().__init__()
        if not fields:
            raise ValueError("a batch needs at least one field")
        first = fields[0]
        for f in fields[1:]:
            if (f.height, f.width) != (first.height, first.width) or not compatible(f.config, first.config):
                raise ValueError(
                    "batch members need the same image size and settings (except table size, latent dim, width)"
                )
        self.configs = [f.config for f in fields]
        self.height, self.width = first.height, first.width
        self.geometries = [f.grid.geometry for f in fields]
        self.latents = StackedLatents([f.grid.latents for f in fields])
        self.decoder = LatentDecoder.stack([f.grid.decoder for f in fields])
        self.mlp = StackedMLP([f.mlp for f in fields])
        self.width_per_member = self.decoder.latent_dim
        self.entropy_model = FactorizedEntropyModel.stack([f.grid.entropy_model for f in fields], self.width_per_member)
        self.quantizer = make_quantizer(first.config)
        self.fused_rate = fused_rate and len(fields) == 1 and not self.latents.padded
        self.register_buffer(
            "num_latents", torch.tensor([float(n) for n in self.latents.num_latents]), persistent=False
        )

    @property
    def members(self) -> int:
        return self.latents.members

    def quantized(self, generators: Sequence[Optional[torch.Generator]]) -> Float[Tensor, "b rows d"]:
        """The latents as this training step sees them (annealed/straight-through rounded; rounded in eval mode),
        padding at exact zeros. With SGA, member ``i``'s noise comes from ``generators[i]`` in its own shape, so its
        random numbers are those of its solo fit; nothing is drawn outside ``quantizer.sampling``."""
        noise = self.latents.noise(generators) if self.quantizer.sampling else None
        return self.latents.masked(self.quantizer(self.latents.values, noise=noise))

    def set_progress(self, step: int, steps: int) -> None:
        """Move the rounding schedule to ``step`` of ``steps``."""
        self.quantizer.set_progress(step, steps)

    def rate_bits(self, q: Float[Tensor, "b rows d"]) -> Float[Tensor, " b"]:
        """Bits of each member's (unpadded) quantized latents under its entropy model, float32, differentiable.

        Through the entropy-model contract: ``bits`` for a lone unpadded member (the fused kernel where enabled),
        else ``likelihood`` per latent, masked and summed per member.
        """
        B, R, D = q.shape
        x = q.permute(1, 0, 2).reshape(R, B * D)
        if B == 1 and not self.latents.padded:
            return self.entropy_model.bits(x, fused=self.fused_rate).reshape(1)
        with torch.autocast(device_type=q.device.type, enabled=False):
            bits = -torch.log2(self.entropy_model.likelihood(x.float())).view(R, B, D)
            return (bits * self.latents.mask.permute(1, 0, 2)).sum(dim=(0, 2))

    def rgb(self, interpolated: Float[Tensor, "b n levels d"]) -> Float[Tensor, "b n 3"]:
        """RGB of each member from its latents interpolated per level: the per-level decoder, then the MLP (the
        path of ``ImageField.forward``)."""
        return torch.sigmoid(self.mlp(self.decoder.per_level(interpolated)))

    @torch.no_grad()
    def estimate_bpp(self) -> Optional[float]:
        """A batch of one's training-time size estimate (``ImageField.estimate_bits``'s bpp); None for a larger
        batch (one entropy model spans every member there)."""
        if self.members != 1 or self.latents.padded:
            return None
        bits = self.entropy_model.estimate_bits(torch.round(self.latents.values[0]))
        numels = [p[0].numel() for p in (*self.decoder.parameters(), *self.mlp.parameters())]
        return (bits + stored_network_bits(self.configs[0], numels)) / (self.height * self.width)

    @torch.no_grad()
    def member(self, index: int, device: Union[str, torch.device, None] = None) -> ImageField:
        """Member ``index`` as a standard ImageField, its networks rounded to the file's precision, schedule at its
        end (as a finished fit leaves it); on ``device`` (default: this module's)."""
        device = self.latents.values.device if device is None else torch.device(device)
        with torch.random.fork_rng(devices=[]):  # the constructor's random init is overwritten; keep the RNG
            field = ImageField(self.configs[index], self.height, self.width, device=device).to(device)
        self.latents.copy_member_to(index, field.grid.latents)
        self.decoder.copy_member_to(index, field.grid.decoder)
        self.mlp.copy_member_to(index, field.mlp)
        self.entropy_model.copy_member_to(index, self.width_per_member, field.grid.entropy_model)
        field.grid.set_progress(1, 1)
        field.round_networks()  # the file stores these weights exactly: what is measured from here on decodes
        return field
