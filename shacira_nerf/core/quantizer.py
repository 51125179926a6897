"""Quantization of the latents: an annealed stand-in for rounding during training, then straight-through rounding.

Rounding has zero gradient almost everywhere, so training needs a differentiable stand-in. Two are available.

``mode="soft_round"`` (the default, and the NeRF method's) is the soft rounding function of Agustsson & Theis (2020),

    s_a(x) = floor(x) + 1/2 + tanh(a * r) / (2 * tanh(a / 2)),   r = x - floor(x) - 1/2,

which is the identity as a -> 0 and hard rounding as a -> inf. The sharpness ``a`` grows geometrically from
``alpha_start`` to ``alpha_end`` over the first ``anneal_fraction`` of training (the appendix's "annealing period",
0.95 by default); for the rest of training the latents are rounded exactly and the gradient passes straight through
(identity backward). In eval mode the latents are always hard-rounded: what the viewer shows is what the file stores.

Soft rounding is deterministic, so the network can learn to use latents that sit on the steep part of the curve as
continuous values; hard rounding destroys them at the switch to straight-through rounding (on kodim23 the training PSNR
drops by 2 to 4.5 dB there). ``mode="sga"`` is stochastic Gumbel annealing (Yang, Bamler & Mandt 2020, "Improving Inference
for Neural Image Compression"), which the SHACIRA authors' public Kodak config uses: each latent v becomes a relaxed
sample between f = floor(v) and f + 1,

    sga(v) = f + sigmoid((d(r) + n) / T),   d(r) = (tanh(r) - tanh(1 - r)) / T,   r = v - f,   n ~ Logistic(0, 1),

the two-outcome Gumbel-softmax at temperature T with logits -tanh(r) / T (floor) and -tanh(1 - r) / T (ceil), as in
the authors' ``LatentDecoder`` (Yang et al. use atanh, unbounded, where the authors use tanh); the difference of two
Gumbel variables is logistic, so one uniform u per latent suffices: n = log(u) - log(1 - u). Because which integer a
latent lands on is random, a value between two integers is noisy for the network, which pushes it to latents whose
rounding it can rely on. The temperature falls geometrically from ``temperature_start`` to ``temperature_end`` over
``anneal_fraction`` of training (the authors' ``temperature_sched``: ``DecayScheduler`` "exp" from 1.0 to
``temperature`` = 0.1 over ``decay_period`` = 0.9 of the epochs), and straight-through rounding follows, as for soft
rounding.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Literal, Optional, Union

import torch
from torch import Tensor, nn

QuantizerMode = Literal["soft_round", "sga"]
"""The training-time stand-in for rounding while annealing (see the module docstring)."""

QUANTIZER_MODES = ("soft_round", "sga")


def ste_round(x: Tensor) -> Tensor:
    """Round in the forward pass, identity in the backward pass (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def soft_round(x: Tensor, alpha: Union[float, Tensor]) -> Tensor:
    """Agustsson & Theis soft rounding with sharpness ``alpha`` (> 0): identity as alpha -> 0, round as alpha -> inf.

    ``alpha`` may be a 0-d tensor on ``x``'s device (``AnnealedQuantizer.scalars_on_device``); it is not checked then
    (a check would read it back to the host).
    """
    if not isinstance(alpha, Tensor) and alpha <= 0:
        raise ValueError(f"soft rounding sharpness must be > 0, got {alpha}")
    floor = torch.floor(x).detach()
    r = x - floor - 0.5
    scale = torch.tanh(alpha / 2.0) if isinstance(alpha, Tensor) else math.tanh(alpha / 2.0)
    return floor + 0.5 + torch.tanh(alpha * r) / (2.0 * scale)


def logistic_noise(uniform: Tensor) -> Tensor:
    """Logistic(0, 1) noise log(u) - log(1 - u) from uniforms in [0, 1); clamped so that u = 0 stays finite."""
    tiny = torch.finfo(uniform.dtype).tiny
    u = uniform.clamp(tiny, 1.0 - torch.finfo(uniform.dtype).eps)
    return torch.log(u) - torch.log1p(-u)


def sga_round(x: Tensor, temperature: Union[float, Tensor], uniform: Tensor) -> Tensor:
    """Stochastic Gumbel annealing: a relaxed sample between floor(x) and floor(x) + 1 (see the module docstring).

    ``uniform`` (same shape as ``x``, values in [0, 1)) is the randomness, one number per latent, so that the caller
    decides where it comes from. As the temperature -> 0 the sample is floor or ceil, the nearer one more often.
    ``temperature`` may be a 0-d tensor on ``x``'s device (not checked then, see ``soft_round``).
    """
    if not isinstance(temperature, Tensor) and temperature <= 0:
        raise ValueError(f"SGA temperature must be > 0, got {temperature}")
    if uniform.shape != x.shape:
        raise ValueError(f"SGA noise has shape {tuple(uniform.shape)}, the latents {tuple(x.shape)}")
    floor = torch.floor(x).detach()
    r = x - floor
    logit = (torch.tanh(r) - torch.tanh(1.0 - r)) / temperature  # log-odds of the ceiling before the noise
    return floor + torch.sigmoid((logit + logistic_noise(uniform)) / temperature)


class AnnealedQuantizer(nn.Module):
    """Annealed soft rounding or SGA, then straight-through rounding; hard rounding in eval mode.

    Args:
        alpha_start: soft-rounding sharpness at step 0 (small: close to the identity, gradients flow freely).
        alpha_end: sharpness reached at the end of the annealing period (large: close to hard rounding).
        anneal_fraction: fraction of training spent annealing; after it, straight-through rounding.
        mode: "soft_round" (deterministic, the default) or "sga" (stochastic Gumbel annealing).
        temperature_start: SGA temperature at step 0 (the authors: 1.0).
        temperature_end: SGA temperature at the end of the annealing period (the authors' Kodak config: 0.1).
    """

    def __init__(
        self,
        alpha_start: float = 1.0,
        alpha_end: float = 32.0,
        anneal_fraction: float = 0.95,
        mode: QuantizerMode = "soft_round",
        temperature_start: float = 1.0,
        temperature_end: float = 0.1,
    ) -> None:
        super().__init__()
        if not 0 < alpha_start <= alpha_end:
            raise ValueError(f"need 0 < alpha_start <= alpha_end, got {alpha_start}, {alpha_end}")
        if not 0.0 <= anneal_fraction <= 1.0:
            raise ValueError(f"anneal_fraction must be in [0, 1], got {anneal_fraction}")
        if mode not in QUANTIZER_MODES:
            raise ValueError(f"quantizer mode must be one of {QUANTIZER_MODES}, got {mode!r}")
        if not 0 < temperature_end <= temperature_start:
            raise ValueError(
                f"need 0 < temperature_end <= temperature_start, got {temperature_start}, {temperature_end}"
            )
        self.alpha_start = float(alpha_start)
        self.alpha_end = float(alpha_end)
        self.anneal_fraction = float(anneal_fraction)
        self.mode: QuantizerMode = mode
        self.temperature_start = float(temperature_start)
        self.temperature_end = float(temperature_end)
        # Training progress in [0, 1]; a buffer so that a resumed checkpoint continues the schedule where it was.
        self.register_buffer("progress", torch.zeros(()), persistent=True)
        # Host copy of the buffer: reading a CUDA buffer with float() waits for the GPU, and the forward pass needs
        # the value twice per call; a sync per call stalls the kernel queue of every training step. None: read the
        # buffer once (after a checkpoint was loaded into it).
        self._progress_host: Optional[float] = 0.0
        # The current sharpness (soft rounding) or temperature (SGA) as a 0-d buffer on the latents' device, filled
        # by set_progress. Read instead of the Python value while ``scalars_on_device`` is set: a CUDA graph
        # (nerf/step_graph.py) records a Python number as a constant, and replays whatever the buffer holds.
        self.register_buffer("annealed_value", torch.tensor(self._annealed_value()), persistent=False)
        self.scalars_on_device = False

    def set_progress(self, step: int, max_steps: int) -> None:
        """Move the schedule to ``step`` of ``max_steps`` (called by the training loop before each iteration)."""
        value = min(max(step / max(max_steps, 1), 0.0), 1.0)
        self.progress.fill_(value)
        self._progress_host = struct.unpack("f", struct.pack("f", value))[0]  # the buffer's float32 value
        self.annealed_value.fill_(self._annealed_value())

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._progress_host = None
        self.annealed_value.fill_(self._annealed_value())

    def _annealed_value(self) -> float:
        """The schedule's number for this mode now: the SGA temperature or the soft-rounding sharpness."""
        return self.temperature if self.mode == "sga" else self.alpha

    @property
    def progress_value(self) -> float:
        """The schedule's progress as a Python float, without a device read-back once known."""
        if self._progress_host is None:
            self._progress_host = float(self.progress)
        return self._progress_host

    @property
    def annealing(self) -> bool:
        """Whether soft rounding or SGA (rather than straight-through rounding) is in use at the current progress."""
        return self.progress_value < self.anneal_fraction

    @property
    def sampling(self) -> bool:
        """Whether the forward pass draws random noise now (SGA mode, training, annealing): callers that own the
        randomness draw it only then, so that their random streams do not depend on the mode's later phases."""
        return self.training and self.mode == "sga" and self.annealing

    def _annealed(self, start: float, end: float) -> float:
        """Geometric interpolation from ``start`` to ``end`` over the annealing period, ``end`` after it."""
        if self.anneal_fraction <= 0:
            return end
        t = min(self.progress_value / self.anneal_fraction, 1.0)
        return start * (end / start) ** t

    @property
    def alpha(self) -> float:
        """Current soft-rounding sharpness: geometric interpolation from alpha_start to alpha_end."""
        return self._annealed(self.alpha_start, self.alpha_end)

    @property
    def temperature(self) -> float:
        """Current SGA temperature: geometric from temperature_start to temperature_end over the annealing period
        (the authors' schedule: T = 1.0 x 0.1 ** (epoch / (epochs x decay_period)), held at 0.1 after it)."""
        return self._annealed(self.temperature_start, self.temperature_end)

    def forward(
        self,
        x: Tensor,
        noise: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
        kernel: bool = False,
    ) -> Tensor:
        """Quantize ``x``: rounded in eval mode, annealed stand-in while annealing, straight-through after.

        Args:
            x: the latents.
            noise: SGA only: uniforms in [0, 1) of ``x``'s shape, one per latent (the caller's randomness).
            generator: SGA only, without ``noise``: the generator to draw the uniforms from (default: torch's
                global RNG). Neither is used (nor drawn from) outside ``sampling``.
            kernel: SGA only, without ``noise`` and ``generator``: one Triton kernel that draws its own uniforms
                (``triton_sga``), seeded from torch's CPU generator (no device read-back); the same sample for the
                same seed on any device, not torch's draws. Not while ``scalars_on_device`` is set: its seed is drawn on
                the host, and a CUDA graph would replay one noise sample every step.
        """
        if not self.training:
            return torch.round(x)
        if not self.annealing:
            return ste_round(x)
        on_device = self.scalars_on_device
        if self.mode == "soft_round":
            return soft_round(x, self.annealed_value if on_device else self.alpha)
        if kernel and noise is None and generator is None and not on_device:
            from shacira_nerf.core.triton_sga import fused_sga_round

            return fused_sga_round(x, self.temperature, int(torch.randint(0, 2**31 - 1, (1,))))
        if noise is None:
            noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return sga_round(x, self.annealed_value if on_device else self.temperature, noise)

    def extra_repr(self) -> str:
        if self.mode == "sga":
            schedule = f"SGA temperature {self.temperature_start}->{self.temperature_end}"
        else:
            schedule = f"alpha {self.alpha_start}->{self.alpha_end}"
        return f"{schedule} over {self.anneal_fraction:.0%} of training, then STE"
