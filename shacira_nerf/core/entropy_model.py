"""The factorized entropy model: one monotone CDF per latent dimension (appendix eqs. 1-2, Balle et al. 2018).

Each latent dimension d has its own small MLP c_d: R -> (0, 1) that is monotone by construction: every layer's matrix
goes through softplus (non-negative weights), the hidden nonlinearity is x + tanh(a) * tanh(x) with tanh(a) in
(-1, 1) (monotone), and a sigmoid closes it. The probability of an integer k is the CDF's mass on [k - 1/2, k + 1/2]
(eq. 2), which is also the density convolved with a unit uniform, so it is defined for the soft-rounded
(non-integer) latents of training too.

Two uses, kept apart as in CompressAI: ``likelihood`` (differentiable, for the rate term of the loss) and ``pmf``
(float64 numbers over an integer support, from which the coder builds the integer tables stored in the file).

Why not CompressAI's ``EntropyBottleneck``: its forward pass decides the quantization itself (additive noise in
training, rounding *without* a straight-through gradient otherwise), while SHACIRA quantizes with annealed soft
rounding / straight-through rounding and needs the likelihood of exactly those values with a gradient into the
latents; its likelihood function is private API. The parameterization here is the same family (Balle et al. 2018).
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from shacira_nerf.core.rate import bits_from_likelihoods

FUSED_FILTERS = (3, 3, 3)
"""The hidden widths the fused Triton rate kernel (``triton_rate``) is written for: the appendix's and the default."""

REFIT_LR = 1e-2
"""Adam learning rate of ``EntropyModel.refit`` (fitting to fixed integers is well posed: a large rate converges)."""

REFIT_CHECK_EVERY = 50
REFIT_TOLERANCE = 1e-4
"""``refit`` stops early when ``REFIT_CHECK_EVERY`` steps saved less than this fraction of the bits."""

MAX_BITS_TABLE = 4096
"""``FactorizedEntropyModel.bits`` on a CPU evaluates its model once per integer instead of once per latent for
integer-valued latents spanning at most this many integers (and more latents than that)."""

LIKELIHOOD_BOUND = 1e-9
"""Smallest likelihood the rate term sees: bounds the bits of one latent at about 30 (keeps log2 finite)."""

ENTROPY_MODELS = ("factorized", "per_level")
"""The entropy models a grid may use (``ShaciraModelConfig.entropy_model``) and a file's grid may name
(``file_layer.ENTROPY_MODELS`` repeats them, torch-free; a test holds the two equal)."""


def table_layout(name: str, num_levels: int, channels: int) -> List[List[int]]:
    """``layout[level][channel]``: the index of the coding table (``<grid>/table/<index>`` in a file) that codes
    latent ``channel`` of level ``level`` under the entropy model ``name``.

    Pure arithmetic on the file's header values, so the decoder gets the stream layout without building a model:
    "factorized" shares one table per channel across the levels, "per_level" has one per (level, channel),
    numbered ``level * channels + channel``.
    """
    if name == "factorized":
        return [list(range(channels)) for _ in range(num_levels)]
    if name == "per_level":
        return [[level * channels + d for d in range(channels)] for level in range(num_levels)]
    raise ValueError(f"unknown entropy model {name!r} (known: {', '.join(ENTROPY_MODELS)})")


class EntropyModel(nn.Module):
    """What the rest of the package asks of an entropy model over integer latents [n, channels] (in CompressAI's
    spirit: one object owns the likelihood for training, the size estimate, and the probabilities the coder's
    tables are built from; decoding reads those stored tables, never the model).
    """

    channels: int
    name: str = ""
    """Which model this is (one of ``ENTROPY_MODELS``): the file records it per grid."""
    num_tables: int
    """Coding tables the file stores for a grid under this model (``table_layout``)."""

    def table_index(self, level: int, channel: int) -> int:
        """The coding table of latent ``channel`` at ``level`` (``table_layout``)."""
        raise NotImplementedError

    def likelihood(self, x: Float[Tensor, "n channels"]) -> Float[Tensor, "n channels"]:
        """Differentiable probability of each (possibly soft-rounded) latent, bounded below."""
        raise NotImplementedError

    def bits(self, x: Float[Tensor, "n channels"], fused: bool = False) -> Float[Tensor, ""]:
        """Differentiable total bits -sum log2 P(x) in float32: the rate term of the loss."""
        return bits_from_likelihoods(self.likelihood(x))

    @torch.no_grad()
    def estimate_bits(self, integers: Float[Tensor, "n channels"]) -> float:
        """Estimated coded bits of these integer latents as the coder codes them: each channel's probabilities
        renormalised over the integers it uses ([min, max]). An estimate: the stored tables are quantized to 16 bits
        and each coded stream ends with a few bytes, so the file is a little larger (and the file is the truth).
        """
        raise NotImplementedError

    def pmf(self, table: int, low: int, high: int) -> np.ndarray:
        """Float64 probabilities of the integers ``low..high`` under coding table ``table`` (``table_index``; for the
        factorized model, the channel): what the coder's integer tables come from."""
        raise NotImplementedError

    def histogram(self, integers: Float[Tensor, "n channels"]) -> List[Tuple[Tensor, Tensor]]:
        """(distinct values, counts) of the integers each coding table codes, in table order (what ``refit`` fits);
        here one per channel over all rows."""
        return [torch.unique(integers[:, d], return_counts=True) for d in range(integers.shape[1])]

    def refit(self, integers: Float[Tensor, "n channels"], steps: int, lr: float = REFIT_LR) -> None:
        """Fit this model alone to final integer latents (Adam on their bits), stopping early once ``REFIT_CHECK_EVERY``
        steps save less than ``REFIT_TOLERANCE`` of them.

        Why: the file's probability tables come from this model, so its fit to the final integers is the file's
        latent size; during training it chased latents that kept moving (and, at the appendix's 1e-4, barely moved).
        The integers' histogram makes each step cost a few hundred evaluations instead of one per latent.
        """
        if steps <= 0 or integers.numel() == 0:
            return
        histogram = self.histogram(integers)
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        best = math.inf
        with torch.enable_grad():
            for step in range(steps):
                loss = self.histogram_bits(histogram)
                if step % REFIT_CHECK_EVERY == 0:
                    bits = float(loss.detach())
                    if bits > best * (1.0 - REFIT_TOLERANCE):
                        break
                    best = bits
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

    def histogram_bits(self, histogram: Sequence[Tuple[Tensor, Tensor]]) -> Float[Tensor, ""]:
        """Bits of integer latents given per coding table as (distinct values, counts) (``histogram``): exactly the
        per-latent sum. This default is the factorized one (table = channel)."""
        device = histogram[0][0].device
        total = torch.zeros((), device=device)
        for d, (values, counts) in enumerate(histogram):
            x = torch.zeros(values.shape[0], self.channels, device=device)
            x[:, d] = values.float()
            total = total - (counts.float() * torch.log2(self.likelihood(x)[:, d])).sum()
        return total


class FactorizedEntropyModel(EntropyModel):
    """Per-dimension monotone CDF MLPs.

    Args:
        channels: latent dimensions, each with its own CDF model.
        filters: hidden widths of each CDF MLP (Balle et al. use (3, 3, 3)).
        init_scale: initial spread of the modelled distribution (Balle et al.'s 10).
    """

    name = "factorized"

    def __init__(self, channels: int, filters: Sequence[int] = (3, 3, 3), init_scale: float = 10.0) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"entropy model needs at least one channel, got {channels}")
        self.channels = int(channels)
        self.num_tables = self.channels
        self.filters = tuple(int(f) for f in filters)
        widths = (1, *self.filters, 1)
        scale = init_scale ** (1.0 / (len(widths) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(widths) - 1):
            init = math.log(math.expm1(1.0 / scale / widths[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, widths[i + 1], widths[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, widths[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, widths[i + 1], 1)))

    def table_index(self, level: int, channel: int) -> int:
        """One table per channel, shared by every level."""
        return channel

    @classmethod
    @torch.no_grad()
    def stack(cls, models: Sequence["FactorizedEntropyModel"], width: int) -> "FactorizedEntropyModel":
        """One model of ``width`` channels per member: channel ``i * width + d`` is member ``i``'s channel ``d``
        (the factorized model keeps every channel's CDF apart, so this is the members' models side by side; the
        channels a member lacks, padding of a narrower member, keep a fresh CDF that models padding only). The
        caller's random state is left where it was (the fresh CDFs' draws are the model's own)."""
        with torch.random.fork_rng(devices=[]):
            stacked = cls(len(models) * width, models[0].filters)
        for name, p in stacked.named_parameters():
            for i, model in enumerate(models):
                member = model.get_parameter(name)
                p[i * width : i * width + member.shape[0]] = member
        return stacked

    @torch.no_grad()
    def copy_member_to(self, index: int, width: int, model: "FactorizedEntropyModel") -> None:
        """Write member ``index``'s channels of a ``stack``-ed model (``width`` per member) into ``model``."""
        stacked = dict(self.named_parameters())
        for name, p in model.named_parameters():
            p.copy_(stacked[name][index * width : index * width + p.shape[0]])

    def logits_cdf(self, x: Float[Tensor, "channels 1 n"]) -> Float[Tensor, "channels 1 n"]:
        """Logit of the CDF at ``x`` (one row of points per channel); monotone non-decreasing in ``x``."""
        h = x
        for i, (matrix, bias) in enumerate(zip(self.matrices, self.biases)):
            w = F.softplus(matrix)  # [C, out, in], non-negative: monotone
            if h.is_cuda:
                # The matrices are at most 3x3 while n is millions: cuBLAS runs this batched matmul with a poor
                # kernel (80% of a training step on an H200); a sum of broadcast products over the <= 3 inputs
                # is memory-bound and fast. On CPU the matmul is the faster of the two.
                out = bias + w[:, :, :1] * h[:, :1, :]
                for j in range(1, w.shape[2]):
                    out = out + w[:, :, j : j + 1] * h[:, j : j + 1, :]
                h = out
            else:
                h = torch.matmul(w, h) + bias
            if i < len(self.factors):
                h = h + torch.tanh(self.factors[i]) * torch.tanh(h)
        return h

    def cdf(self, x: Float[Tensor, "n channels"]) -> Float[Tensor, "n channels"]:
        """The modelled CDF c_d(x) per channel (eq. 1)."""
        return torch.sigmoid(self.logits_cdf(x.t().unsqueeze(1))).squeeze(1).t()

    def likelihood(self, x: Float[Tensor, "n channels"]) -> Float[Tensor, "n channels"]:
        """P_d(x) = c_d(x + 1/2) - c_d(x - 1/2) (eq. 2), in float32, bounded below by ``LIKELIHOOD_BOUND``.

        Computed from the logits with the sign trick (subtracting in the tail where both sigmoids are close to 0, not
        close to 1) so that far-out values keep an accurate, non-zero probability.
        """
        if x.shape[-1] != self.channels:
            raise ValueError(f"expected {self.channels} latent channels, got shape {tuple(x.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            v = x.float().t().unsqueeze(1)
            lower = self.logits_cdf(v - 0.5)
            upper = self.logits_cdf(v + 0.5)
            sign = -torch.sign(lower + upper).detach()
            p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
            p = p.clamp_min(LIKELIHOOD_BOUND)
        return p.squeeze(1).t()

    def bits(self, x: Float[Tensor, "n channels"], fused: bool = False) -> Float[Tensor, ""]:
        """Differentiable total bits -sum log2 P(x) in float32 (appendix eq. 3), the rate term of the loss.

        ``fused``: one Triton kernel for the likelihood, the log and every gradient (``triton_rate``; the same
        numbers up to float rounding, tested against this reference) instead of the torch ops below; only for
        ``FUSED_FILTERS``. On a CPU, integer-valued latents take ``_bits_of_integers`` (the same numbers, faster).
        """
        if fused:
            from shacira_nerf.core.triton_rate import fused_rate_bits

            if x.shape[-1] != self.channels:
                raise ValueError(f"expected {self.channels} latent channels, got shape {tuple(x.shape)}")
            return fused_rate_bits(x, list(self.matrices), list(self.biases), list(self.factors), LIKELIHOOD_BOUND)
        if x.device.type == "cpu" and x.numel() > MAX_BITS_TABLE and torch.equal(x, torch.round(x)):
            low, high = (float(v) for v in torch.aminmax(x.detach()))
            if high - low + 1 <= MAX_BITS_TABLE:
                return self._bits_of_integers(x, low, high)
        return super().bits(x)

    def _bits_of_integers(self, q: Float[Tensor, "n channels"], low: float, high: float) -> Float[Tensor, ""]:
        """``bits`` of integer-valued latents (straight-through rounding, after annealing), from the model evaluated
        once per integer of [min, max] instead of once per latent: the same numbers up to float summation order.

        Each latent's bits depend only on its value and channel, so a table over the integers in use holds every
        latent's bits and the slope of its bits in its value; the latents' gradient is that slope (through the term
        ``(q - q.detach()) * slope``, zero in value) and the model's gradient comes through the table, gathered once
        per latent (so each integer counts as often as it occurs). Why: on a CPU the model's MLP over every latent
        is about half of a ``shacira-tiny`` step; a few dozen integers are in use.
        """
        values = torch.arange(low, high + 1, dtype=torch.float32)  # low, high: q's smallest and largest integer
        index = (q.detach() - low).long()
        if not (torch.is_grad_enabled() and q.requires_grad):
            table = -torch.log2(self.likelihood(values[:, None].expand(-1, self.channels)))
            return table.gather(0, index).sum()
        points = values[:, None].repeat(1, self.channels).requires_grad_(True)
        table = -torch.log2(self.likelihood(points))
        (slope,) = torch.autograd.grad(table.sum(), points, retain_graph=True)
        return table.gather(0, index).sum() + ((q - q.detach()) * slope.gather(0, index)).sum()

    @torch.no_grad()
    def estimate_bits(self, integers: Float[Tensor, "n channels"]) -> float:
        """See ``EntropyModel.estimate_bits``; per channel: -sum log2 P(k) + n log2 (mass of [min, max])."""
        if integers.numel() == 0:
            return 0.0
        bits = -torch.log2(self.likelihood(integers)).double().sum(dim=0)
        lo, hi = integers.min(dim=0).values, integers.max(dim=0).values
        mass = self.cdf(torch.stack([hi + 0.5])) - self.cdf(torch.stack([lo - 0.5]))
        bits = bits + integers.shape[0] * torch.log2(mass.clamp_min(1e-30)).double().squeeze(0)
        # Renormalised probabilities are <= 1, so each channel's true count is >= 0; when every latent of a channel
        # is one integer the two sums cancel and float rounding would leave them a hair either side of zero.
        return float(bits.clamp_min(0.0).sum())

    @torch.no_grad()
    def pmf(self, channel: int, low: int, high: int) -> np.ndarray:
        """Float64 probabilities of the integers ``low..high`` (inclusive) under channel ``channel``.

        The coder quantizes these into the integer tables that the file stores; decoding reads those integers and
        never calls this, so a file decodes identically on any device.
        """
        if high < low:
            raise ValueError(f"empty support [{low}, {high}]")
        device = self.matrices[0].device
        ks = torch.arange(low, high + 1, device=device, dtype=torch.float32)
        x = torch.zeros(ks.numel(), self.channels, device=device)
        x[:, channel] = ks
        p = self.likelihood(x)[:, channel]
        return p.double().cpu().numpy()
