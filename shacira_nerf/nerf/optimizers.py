"""Adam for shacira's parameter groups: torch's fused kernel on a GPU.

Why: a shacira step on a GPU is bound by the host's kernel launches, and it has six parameter groups. Adam's
default (multi-tensor) path launches several kernels per group, and under mixed precision nerfstudio's gradient
scaler reads each group's inf check back to the host before stepping it: six synchronisations a step. The fused
kernel is one launch per group and takes the scale and the inf flag on the device. Measured on the H200
(``benchmarks/gpu/step_time.py``, 2026-12-02): 32.8 -> 27.3 ms a step, the same run otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from nerfstudio.engine.optimizers import AdamOptimizerConfig


@dataclass
class FusedAdamOptimizerConfig(AdamOptimizerConfig):
    """nerfstudio's Adam config plus the choice of torch's fused kernel."""

    fused: Optional[bool] = None
    """torch's fused Adam kernel: None uses it when every parameter is on a GPU (torch's default elsewhere)."""

    def setup(self, params) -> torch.optim.Optimizer:  # noqa: ANN001 - nerfstudio's signature
        params = list(params)
        fused = self.fused
        if fused is None:
            tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
            fused = bool(tensors) and all(p.is_cuda for p in tensors)
        kwargs = {"lr": self.lr, "eps": self.eps, "weight_decay": self.weight_decay}
        return self._target(params, fused=fused or None, **kwargs)
