"""LPIPS that never downloads: built on first use, and only when torchvision's AlexNet weights are already cached.

nerfacto builds torchmetrics' LPIPS when the model is constructed, and torchvision then downloads AlexNet's weights
(233 MB), so stock nerfacto cannot start offline. This wrapper defers construction to the first evaluation and checks
the torch hub cache first; without the weights it reports "not computed" and why, instead of failing or downloading.
It is a plain object (not an ``nn.Module``), so AlexNet never lands in checkpoints.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor

ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"
"""The file torchvision's AlexNet_Weights.DEFAULT resolves to, under $TORCH_HOME/hub/checkpoints."""


def alexnet_weights_path() -> str:
    """Where torchvision looks for (and would download) the AlexNet weights LPIPS needs."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", ALEXNET_WEIGHTS)


class LazyLPIPS:
    """Callable like torchmetrics' LPIPS metric; returns None when the weights are not available offline."""

    def __init__(self) -> None:
        self._metric = None
        self.unavailable_reason: Optional[str] = None

    def _build(self) -> None:
        path = alexnet_weights_path()
        if not os.path.exists(path):
            self.unavailable_reason = f"LPIPS not computed: AlexNet weights not in the torch cache ({path})"
            return
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        self._metric = LearnedPerceptualImagePatchSimilarity(normalize=True)
        self.unavailable_reason = None

    def __call__(self, preds: Tensor, target: Tensor) -> Optional[Tensor]:
        if self._metric is None and self.unavailable_reason is None:
            self._build()
        if self._metric is None:
            return None
        self._metric = self._metric.to(preds.device)
        return self._metric(preds, target)
