"""Quantization of the latents: annealed soft rounding during training, then straight-through rounding.

Rounding has zero gradient almost everywhere, so training needs a differentiable stand-in. We use the soft rounding
function of Agustsson & Theis (2020),

    s_a(x) = floor(x) + 1/2 + tanh(a * r) / (2 * tanh(a / 2)),   r = x - floor(x) - 1/2,

which is the identity as a -> 0 and hard rounding as a -> inf. The sharpness ``a`` grows geometrically from
``alpha_start`` to ``alpha_end`` over the first ``anneal_fraction`` of training (the appendix's "annealing period",
0.95 by default); for the rest of training the latents are rounded exactly and the gradient passes straight through
(identity backward). In eval mode the latents are always hard-rounded: what the viewer shows is what the file stores.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Optional

import torch
from torch import Tensor, nn


def ste_round(x: Tensor) -> Tensor:
    """Round in the forward pass, identity in the backward pass (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def soft_round(x: Tensor, alpha: float) -> Tensor:
    """Agustsson & Theis soft rounding with sharpness ``alpha`` (> 0): identity as alpha -> 0, round as alpha -> inf."""
    if alpha <= 0:
        raise ValueError(f"soft rounding sharpness must be > 0, got {alpha}")
    floor = torch.floor(x).detach()
    r = x - floor - 0.5
    return floor + 0.5 + torch.tanh(alpha * r) / (2.0 * math.tanh(alpha / 2.0))


class AnnealedQuantizer(nn.Module):
    """Soft rounding with an annealed sharpness, then straight-through rounding; hard rounding in eval mode.

    Args:
        alpha_start: soft-rounding sharpness at step 0 (small: close to the identity, gradients flow freely).
        alpha_end: sharpness reached at the end of the annealing period (large: close to hard rounding).
        anneal_fraction: fraction of training spent annealing; after it, straight-through rounding.
    """

    def __init__(self, alpha_start: float = 1.0, alpha_end: float = 32.0, anneal_fraction: float = 0.95) -> None:
        super().__init__()
        if not 0 < alpha_start <= alpha_end:
            raise ValueError(f"need 0 < alpha_start <= alpha_end, got {alpha_start}, {alpha_end}")
        if not 0.0 <= anneal_fraction <= 1.0:
            raise ValueError(f"anneal_fraction must be in [0, 1], got {anneal_fraction}")
        self.alpha_start = float(alpha_start)
        self.alpha_end = float(alpha_end)
        self.anneal_fraction = float(anneal_fraction)
        # Training progress in [0, 1]; a buffer so that a resumed checkpoint continues the schedule where it was.
        self.register_buffer("progress", torch.zeros(()), persistent=True)
        # Host copy of the buffer: reading a CUDA buffer with float() waits for the GPU, and the forward pass needs
        # the value twice per call; a sync per call stalls the kernel queue of every training step. None: read the
        # buffer once (after a checkpoint was loaded into it).
        self._progress_host: Optional[float] = 0.0

    def set_progress(self, step: int, max_steps: int) -> None:
        """Move the schedule to ``step`` of ``max_steps`` (called by the training loop before each iteration)."""
        value = min(max(step / max(max_steps, 1), 0.0), 1.0)
        self.progress.fill_(value)
        self._progress_host = struct.unpack("f", struct.pack("f", value))[0]  # the buffer's float32 value

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._progress_host = None

    @property
    def progress_value(self) -> float:
        """The schedule's progress as a Python float, without a device read-back once known."""
        if self._progress_host is None:
            self._progress_host = float(self.progress)
        return self._progress_host

    @property
    def annealing(self) -> bool:
        """Whether soft rounding (rather than straight-through rounding) is in use at the current progress."""
        return self.progress_value < self.anneal_fraction

    @property
    def alpha(self) -> float:
        """Current soft-rounding sharpness: geometric interpolation from alpha_start to alpha_end."""
        if self.anneal_fraction <= 0:
            return self.alpha_end
        t = min(self.progress_value / self.anneal_fraction, 1.0)
        return self.alpha_start * (self.alpha_end / self.alpha_start) ** t

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return torch.round(x)
        if self.annealing:
            return soft_round(x, self.alpha)
        return ste_round(x)

    def extra_repr(self) -> str:
        return f"alpha {self.alpha_start}->{self.alpha_end} over {self.anneal_fraction:.0%} of training, then STE"
