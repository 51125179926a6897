"""nerfacto's per-step pieces that copy host constants to the GPU, made device-resident.

Why: nerfstudio's uniform samplers build their bins on the host and copy them to the GPU every call, its RGB
renderer copies the named background colour (nerfacto: twice a step), torchmetrics' stateful PSNR reads back to the
host, the proposal sampler's annealing exponent is a Python float, and the camera optimizer's rotation metrics are
copied to the host (``numpy.rad2deg(rot.mean().cpu())``) every step. Each copy makes the host wait for the GPU
(4 of the 25 synchronisations of an H200 shacira step, benchmarks/README.md), and none of them can be recorded in a
CUDA graph (``step_graph.py``), which needs every step's work on the device and every per-step number in device
memory. Each class here computes what its nerfstudio parent computes, from device tensors; the tests check the
numbers against nerfstudio's on the same random draws.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from jaxtyping import Float
from nerfstudio.cameras.camera_optimizers import CameraOptimizer
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.model_components import renderers
from nerfstudio.model_components.ray_samplers import (
    ProposalNetworkSampler,
    SpacedSampler,
    UniformLinDispPiecewiseSampler,
    UniformSampler,
)
from nerfstudio.utils import colors
from torch import Tensor, nn


class _DeviceBins(SpacedSampler):
    """``SpacedSampler.generate_ray_samples`` with its bins made on the rays' device (nerfstudio makes them on the
    host and copies them over every call)."""

    def generate_ray_samples(
        self, ray_bundle: Optional[RayBundle] = None, num_samples: Optional[int] = None
    ) -> RaySamples:
        assert ray_bundle is not None and ray_bundle.nears is not None and ray_bundle.fars is not None
        num_samples = num_samples or self.num_samples
        assert num_samples is not None
        device = ray_bundle.origins.device
        bins = torch.linspace(0.0, 1.0, num_samples + 1, device=device)[None, :]  # [1, samples + 1]
        if self.train_stratified and self.training:
            # One jitter per bin edge (or per ray), each edge moved within the half-bins around it.
            jitter_shape = (ray_bundle.origins.shape[0], 1 if self.single_jitter else num_samples + 1)
            jitter = torch.rand(jitter_shape, dtype=bins.dtype, device=device)
            centers = (bins[..., 1:] + bins[..., :-1]) / 2.0
            upper = torch.cat([centers, bins[..., -1:]], -1)
            lower = torch.cat([bins[..., :1], centers], -1)
            bins = lower + (upper - lower) * jitter
        s_near, s_far = self.spacing_fn(ray_bundle.nears), self.spacing_fn(ray_bundle.fars)

        def spacing_to_euclidean(s: Tensor) -> Tensor:
            return self.spacing_fn_inv(s * s_far + (1 - s) * s_near)

        euclidean = spacing_to_euclidean(bins)  # [rays, samples + 1]
        return ray_bundle.get_ray_samples(
            bin_starts=euclidean[..., :-1, None],
            bin_ends=euclidean[..., 1:, None],
            spacing_starts=bins[..., :-1, None],
            spacing_ends=bins[..., 1:, None],
            spacing_to_euclidean_fn=spacing_to_euclidean,
        )


class ResidentUniformSampler(_DeviceBins, UniformSampler):
    """nerfstudio's ``UniformSampler`` (the Blender flags' initial sampler), bins made on the device."""


class ResidentLinDispSampler(_DeviceBins, UniformLinDispPiecewiseSampler):
    """nerfstudio's ``UniformLinDispPiecewiseSampler`` (nerfacto's default initial sampler), bins made on the device."""


class ResidentProposalSampler(ProposalNetworkSampler):
    """nerfstudio's ``ProposalNetworkSampler`` whose weight-annealing exponent is a device buffer.

    nerfacto anneals the proposal weights (``weights ** anneal``) over its first 1000 steps through ``set_anneal``;
    the parent keeps the exponent as a Python float, which a CUDA graph would record as a constant. Here the same
    attribute (``_anneal``) reads a 0-d buffer that ``set_anneal`` fills in place. Its initial sampler defaults to the
    device-resident ``ResidentLinDispSampler``.
    """

    def __init__(self, *args, initial_sampler=None, single_jitter: bool = False, **kwargs) -> None:  # noqa: ANN002, ANN003
        if initial_sampler is None:
            initial_sampler = ResidentLinDispSampler(single_jitter=single_jitter)
        super().__init__(*args, initial_sampler=initial_sampler, single_jitter=single_jitter, **kwargs)

    @property
    def _anneal(self) -> Tensor:  # type: ignore[override]
        return self.anneal_exponent

    @_anneal.setter
    def _anneal(self, value) -> None:  # noqa: ANN001 - a float from nerfacto's callback (or the parent's __init__)
        if "anneal_exponent" not in self._buffers:
            self.register_buffer("anneal_exponent", torch.tensor(float(value)), persistent=False)
        else:
            self.anneal_exponent.fill_(float(value))


class ResidentRGBRenderer(renderers.RGBRenderer):
    """nerfstudio's ``RGBRenderer`` with named background colours copied to each device once, not every call."""

    _device_colors: Dict[Tuple[str, str], Tensor] = {}

    @classmethod
    def get_background_color(
        cls, background_color, shape: Tuple[int, ...], device: torch.device  # noqa: ANN001 - nerfstudio's type
    ) -> Tensor:
        named = isinstance(background_color, str) and background_color in colors.COLORS_DICT
        if not named or renderers.BACKGROUND_COLOR_OVERRIDE is not None:
            return super().get_background_color(background_color, shape, device)
        key = (background_color, str(device))
        color = cls._device_colors.get(key)
        if color is None:
            color = cls._device_colors[key] = colors.COLORS_DICT[background_color].to(device)
        assert shape[-1] == 3, "Background color must be RGB."
        return color.expand(shape)


class BatchPSNR(nn.Module):
    """PSNR of a batch against its target for values in [0, 1]: 10 log10(1 / MSE) over all elements.

    What torchmetrics' ``PeakSignalNoiseRatio(data_range=1.0)`` returns for one batch, without its state: nerfacto
    calls it once per training step and once per evaluation image, and its stateful update reads back to the host.
    """

    def forward(self, preds: Float[Tensor, "*any"], target: Float[Tensor, "*any"]) -> Float[Tensor, ""]:
        mse = torch.mean((preds.float() - target.float()) ** 2)
        return -10.0 * torch.log10(mse)


class ResidentCameraOptimizer(CameraOptimizer):
    """nerfstudio's ``CameraOptimizer`` whose step metrics stay on the device.

    nerfacto's default camera optimizer (``SO3xR3``, on for any real capture) reports the mean and largest rotation of
    its pose adjustments in degrees through ``numpy.rad2deg(rot.mean().cpu())``: a copy to the host every step, which
    a CUDA graph capture refuses ("Cannot copy between CPU and CUDA tensors during CUDA graph capture"), so training
    with graphs crashed at its first step on every capture but the Blender scenes (whose flags turn it off). The same
    four numbers, as 0-d tensors on the parameters' device.
    """

    def get_metrics_dict(self, metrics_dict: dict) -> None:
        if self.config.mode != "off":
            trans = self.pose_adjustment[:, :3].detach().norm(dim=-1)
            rot = self.pose_adjustment[:, 3:].detach().norm(dim=-1)
            metrics_dict["camera_opt_translation_max"] = trans.max()
            metrics_dict["camera_opt_translation_mean"] = trans.mean()
            metrics_dict["camera_opt_rotation_mean"] = torch.rad2deg(rot.mean())
            metrics_dict["camera_opt_rotation_max"] = torch.rad2deg(rot.max())
