"""The rate term in one Triton kernel: bits of every latent under the factorized entropy model, and their gradients.

The torch reference (``FactorizedEntropyModel.likelihood`` then ``bits_from_likelihoods``) evaluates the CDF MLP at
x - 1/2 and x + 1/2 as [channels, width, n] tensors, layer by layer: about 40 elementwise kernels forward and as many
backward, each reading and writing a tensor 3x the size of the latent table (13.8 M latents in nerfacto's main
grid). This kernel does, per block of latents and all in registers: both MLP evaluations, the sign trick, the bound,
the log2 and, when a gradient is wanted, the backward pass written out by hand (the forward is recomputed rather than
stored). It writes the gradient with respect to each latent and per-block partial sums of the bits and of the
gradients of the effective entropy parameters; torch sums the partials, so the result is deterministic.

Because the kernel computes the gradient in the same pass as the value, its autograd function saves the gradient and
its backward only scales it: one pass over the latents per step instead of two.

The MLP is the appendix's (Balle et al.'s) shape, 1 -> 3 -> 3 -> 3 -> 1, written out unit by unit: a generic version
over padded [block, width, width] tiles ran at ~5 ms a call on an H200 (layout shuffles and padding), the explicit one
is plain per-element arithmetic. Other ``entropy_filters`` use the torch reference (``entropy_model.FUSED_FILTERS``). The
parameters enter in their effective form, 43 floats per channel (``pack_parameters``, differentiated by torch):
softplus of each matrix (non-negative weights), the biases, and tanh of each factor.

The per-level model (``per_level_entropy``) runs through the same launch: the parameters are one set per (level,
channel); a program table made once per grid says which level and block each program codes, so each program's
parameters stay scalar (no per-latent gather), no program straddles two levels, and the partial sums are kept per
level. The factorized model is the one-level case (offsets [0, n]), with exactly the programs and sums it had.
"""

from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from jaxtyping import Float
from torch import Tensor

from shacira_nerf.core.entropy_model import FUSED_FILTERS

NUM_PARAMETERS = 43
"""Effective parameters per channel: W0 3, b0 3, T0 3, W1 9, b1 3, T1 3, W2 9, b2 3, T2 3, W3 3, b3 1."""

BLOCK_LATENTS = 256
"""Latents per program."""


@triton.jit
def _tanh(a):
    return 2.0 * tl.sigmoid(2.0 * a) - 1.0


@triton.jit
def _forward(x, p):
    """The (1, 3, 3, 3, 1) MLP with effective parameters at ``p`` (``pack_parameters``): the CDF logit z and the
    tanh values and outputs of the hidden layers (what the backward pass needs)."""
    a10 = tl.load(p + 0) * x + tl.load(p + 3)
    a11 = tl.load(p + 1) * x + tl.load(p + 4)
    a12 = tl.load(p + 2) * x + tl.load(p + 5)
    t10 = _tanh(a10)
    h10 = a10 + tl.load(p + 6) * t10
    t11 = _tanh(a11)
    h11 = a11 + tl.load(p + 7) * t11
    t12 = _tanh(a12)
    h12 = a12 + tl.load(p + 8) * t12
    a20 = tl.load(p + 9) * h10 + tl.load(p + 10) * h11 + tl.load(p + 11) * h12 + tl.load(p + 18)
    a21 = tl.load(p + 12) * h10 + tl.load(p + 13) * h11 + tl.load(p + 14) * h12 + tl.load(p + 19)
    a22 = tl.load(p + 15) * h10 + tl.load(p + 16) * h11 + tl.load(p + 17) * h12 + tl.load(p + 20)
    t20 = _tanh(a20)
    h20 = a20 + tl.load(p + 21) * t20
    t21 = _tanh(a21)
    h21 = a21 + tl.load(p + 22) * t21
    t22 = _tanh(a22)
    h22 = a22 + tl.load(p + 23) * t22
    a30 = tl.load(p + 24) * h20 + tl.load(p + 25) * h21 + tl.load(p + 26) * h22 + tl.load(p + 33)
    a31 = tl.load(p + 27) * h20 + tl.load(p + 28) * h21 + tl.load(p + 29) * h22 + tl.load(p + 34)
    a32 = tl.load(p + 30) * h20 + tl.load(p + 31) * h21 + tl.load(p + 32) * h22 + tl.load(p + 35)
    t30 = _tanh(a30)
    h30 = a30 + tl.load(p + 36) * t30
    t31 = _tanh(a31)
    h31 = a31 + tl.load(p + 37) * t31
    t32 = _tanh(a32)
    h32 = a32 + tl.load(p + 38) * t32
    z = tl.load(p + 39) * h30 + tl.load(p + 40) * h31 + tl.load(p + 41) * h32 + tl.load(p + 42)
    return (
        z,
        t10,
        t11,
        t12,
        t20,
        t21,
        t22,
        t30,
        t31,
        t32,
        h10,
        h11,
        h12,
        h20,
        h21,
        h22,
        h30,
        h31,
        h32,
    )


@triton.jit
def _logit(x, p):
    """The CDF logit of the MLP at x (the hidden values are dead code here, and compiled away)."""
    return _forward(x, p)[0]


@triton.jit
def _logit_backward(x, dz, p):
    """Given dz = d bits / d logit at x: d bits / d x and the per-element gradient of each of the 43 effective
    parameters, in ``pack_parameters`` order (the forward pass is recomputed: cheaper than storing it)."""
    (
        _,
        t10,
        t11,
        t12,
        t20,
        t21,
        t22,
        t30,
        t31,
        t32,
        h10,
        h11,
        h12,
        h20,
        h21,
        h22,
        h30,
        h31,
        h32,
    ) = _forward(x, p)
    # output layer (3 -> 1, no nonlinearity)
    gw4_0 = dz * h30
    g30 = dz * tl.load(p + 39)
    gw4_1 = dz * h31
    g31 = dz * tl.load(p + 40)
    gw4_2 = dz * h32
    g32 = dz * tl.load(p + 41)
    # layer 3: h3 = a + T tanh(a), a = W h2 + b
    gt3_0 = g30 * t30
    da30 = g30 * (1.0 + tl.load(p + 36) * (1.0 - t30 * t30))
    gt3_1 = g31 * t31
    da31 = g31 * (1.0 + tl.load(p + 37) * (1.0 - t31 * t31))
    gt3_2 = g32 * t32
    da32 = g32 * (1.0 + tl.load(p + 38) * (1.0 - t32 * t32))
    g20 = tl.load(p + 24) * da30 + tl.load(p + 27) * da31 + tl.load(p + 30) * da32
    g21 = tl.load(p + 25) * da30 + tl.load(p + 28) * da31 + tl.load(p + 31) * da32
    g22 = tl.load(p + 26) * da30 + tl.load(p + 29) * da31 + tl.load(p + 32) * da32
    # layer 2: h2 = a + T tanh(a), a = W h1 + b
    gt2_0 = g20 * t20
    da20 = g20 * (1.0 + tl.load(p + 21) * (1.0 - t20 * t20))
    gt2_1 = g21 * t21
    da21 = g21 * (1.0 + tl.load(p + 22) * (1.0 - t21 * t21))
    gt2_2 = g22 * t22
    da22 = g22 * (1.0 + tl.load(p + 23) * (1.0 - t22 * t22))
    g10 = tl.load(p + 9) * da20 + tl.load(p + 12) * da21 + tl.load(p + 15) * da22
    g11 = tl.load(p + 10) * da20 + tl.load(p + 13) * da21 + tl.load(p + 16) * da22
    g12 = tl.load(p + 11) * da20 + tl.load(p + 14) * da21 + tl.load(p + 17) * da22
    # layer 1: h1 = a + T tanh(a), a = W x + b
    gt1_0 = g10 * t10
    da10 = g10 * (1.0 + tl.load(p + 6) * (1.0 - t10 * t10))
    gt1_1 = g11 * t11
    da11 = g11 * (1.0 + tl.load(p + 7) * (1.0 - t11 * t11))
    gt1_2 = g12 * t12
    da12 = g12 * (1.0 + tl.load(p + 8) * (1.0 - t12 * t12))
    dx = tl.load(p + 0) * da10 + tl.load(p + 1) * da11 + tl.load(p + 2) * da12
    return (
        dx,
        da10 * x,
        da11 * x,
        da12 * x,
        da10,
        da11,
        da12,
        gt1_0,
        gt1_1,
        gt1_2,
        da20 * h10,
        da20 * h11,
        da20 * h12,
        da21 * h10,
        da21 * h11,
        da21 * h12,
        da22 * h10,
        da22 * h11,
        da22 * h12,
        da20,
        da21,
        da22,
        gt2_0,
        gt2_1,
        gt2_2,
        da30 * h20,
        da30 * h21,
        da30 * h22,
        da31 * h20,
        da31 * h21,
        da31 * h22,
        da32 * h20,
        da32 * h21,
        da32 * h22,
        da30,
        da31,
        da32,
        gt3_0,
        gt3_1,
        gt3_2,
        gw4_0,
        gw4_1,
        gw4_2,
        dz,
    )


@triton.jit
def _rate_kernel(
    q_ptr, p_ptr, offsets_ptr, level_ptr, block_ptr, bits_ptr, grad_q_ptr, gp_ptr, bound, max_blocks,
    C: tl.constexpr, BLOCK: tl.constexpr, NEED_GRAD: tl.constexpr,
):  # fmt: skip
    # Program (pid, c): block ``block_ptr[pid]`` of level ``level_ptr[pid]``, latent channel c, under parameter set
    # level * C + c; its partial sums go to slot (level, block, c) of [levels, max_blocks, C].
    pid = tl.program_id(0)
    c = tl.program_id(1)
    level = tl.load(level_ptr + pid)
    block = tl.load(block_ptr + pid)
    start = tl.load(offsets_ptr + level)
    stop = tl.load(offsets_ptr + level + 1)
    offs = start + block * BLOCK + tl.arange(0, BLOCK)
    mask = offs < stop
    v = tl.load(q_ptr + offs.to(tl.int64) * C + c, mask=mask, other=0.0)
    p = p_ptr + (level * C + c) * 43
    z_lo = _logit(v - 0.5, p)
    z_hi = _logit(v + 0.5, p)
    total = z_lo + z_hi
    s = tl.where(total > 0, -1.0, tl.where(total < 0, 1.0, 0.0))  # the sign trick: subtract in the near tail
    sig_lo = tl.sigmoid(s * z_lo)
    sig_hi = tl.sigmoid(s * z_hi)
    diff = sig_hi - sig_lo
    prob = tl.abs(diff)
    kept = prob > bound  # torch.clamp_min passes no gradient at the bound itself
    prob = tl.where(kept, prob, bound)
    bits = tl.where(mask, -tl.log2(prob), 0.0)
    slot = ((level * max_blocks + block) * C + c).to(tl.int64)
    tl.store(bits_ptr + slot, tl.sum(bits, axis=0))
    if NEED_GRAD:
        # d bits / d prob = -1 / (prob ln 2) where the bound is not active; d prob / d diff = sign(diff).
        sign_diff = tl.where(diff > 0, 1.0, tl.where(diff < 0, -1.0, 0.0))
        dprob = tl.where(mask & kept, -1.4426950408889634 / prob, 0.0) * sign_diff
        dz_hi = dprob * s * sig_hi * (1.0 - sig_hi)
        dz_lo = -dprob * s * sig_lo * (1.0 - sig_lo)
        g = gp_ptr + slot * 43
        (
            dx_lo,
            lo0,
            lo1,
            lo2,
            lo3,
            lo4,
            lo5,
            lo6,
            lo7,
            lo8,
            lo9,
            lo10,
            lo11,
            lo12,
            lo13,
            lo14,
            lo15,
            lo16,
            lo17,
            lo18,
            lo19,
            lo20,
            lo21,
            lo22,
            lo23,
            lo24,
            lo25,
            lo26,
            lo27,
            lo28,
            lo29,
            lo30,
            lo31,
            lo32,
            lo33,
            lo34,
            lo35,
            lo36,
            lo37,
            lo38,
            lo39,
            lo40,
            lo41,
            lo42,
        ) = _logit_backward(v - 0.5, dz_lo, p)
        (
            dx_hi,
            hi0,
            hi1,
            hi2,
            hi3,
            hi4,
            hi5,
            hi6,
            hi7,
            hi8,
            hi9,
            hi10,
            hi11,
            hi12,
            hi13,
            hi14,
            hi15,
            hi16,
            hi17,
            hi18,
            hi19,
            hi20,
            hi21,
            hi22,
            hi23,
            hi24,
            hi25,
            hi26,
            hi27,
            hi28,
            hi29,
            hi30,
            hi31,
            hi32,
            hi33,
            hi34,
            hi35,
            hi36,
            hi37,
            hi38,
            hi39,
            hi40,
            hi41,
            hi42,
        ) = _logit_backward(v + 0.5, dz_hi, p)
        tl.store(g + 0, tl.sum(lo0 + hi0, axis=0))
        tl.store(g + 1, tl.sum(lo1 + hi1, axis=0))
        tl.store(g + 2, tl.sum(lo2 + hi2, axis=0))
        tl.store(g + 3, tl.sum(lo3 + hi3, axis=0))
        tl.store(g + 4, tl.sum(lo4 + hi4, axis=0))
        tl.store(g + 5, tl.sum(lo5 + hi5, axis=0))
        tl.store(g + 6, tl.sum(lo6 + hi6, axis=0))
        tl.store(g + 7, tl.sum(lo7 + hi7, axis=0))
        tl.store(g + 8, tl.sum(lo8 + hi8, axis=0))
        tl.store(g + 9, tl.sum(lo9 + hi9, axis=0))
        tl.store(g + 10, tl.sum(lo10 + hi10, axis=0))
        tl.store(g + 11, tl.sum(lo11 + hi11, axis=0))
        tl.store(g + 12, tl.sum(lo12 + hi12, axis=0))
        tl.store(g + 13, tl.sum(lo13 + hi13, axis=0))
        tl.store(g + 14, tl.sum(lo14 + hi14, axis=0))
        tl.store(g + 15, tl.sum(lo15 + hi15, axis=0))
        tl.store(g + 16, tl.sum(lo16 + hi16, axis=0))
        tl.store(g + 17, tl.sum(lo17 + hi17, axis=0))
        tl.store(g + 18, tl.sum(lo18 + hi18, axis=0))
        tl.store(g + 19, tl.sum(lo19 + hi19, axis=0))
        tl.store(g + 20, tl.sum(lo20 + hi20, axis=0))
        tl.store(g + 21, tl.sum(lo21 + hi21, axis=0))
        tl.store(g + 22, tl.sum(lo22 + hi22, axis=0))
        tl.store(g + 23, tl.sum(lo23 + hi23, axis=0))
        tl.store(g + 24, tl.sum(lo24 + hi24, axis=0))
        tl.store(g + 25, tl.sum(lo25 + hi25, axis=0))
        tl.store(g + 26, tl.sum(lo26 + hi26, axis=0))
        tl.store(g + 27, tl.sum(lo27 + hi27, axis=0))
        tl.store(g + 28, tl.sum(lo28 + hi28, axis=0))
        tl.store(g + 29, tl.sum(lo29 + hi29, axis=0))
        tl.store(g + 30, tl.sum(lo30 + hi30, axis=0))
        tl.store(g + 31, tl.sum(lo31 + hi31, axis=0))
        tl.store(g + 32, tl.sum(lo32 + hi32, axis=0))
        tl.store(g + 33, tl.sum(lo33 + hi33, axis=0))
        tl.store(g + 34, tl.sum(lo34 + hi34, axis=0))
        tl.store(g + 35, tl.sum(lo35 + hi35, axis=0))
        tl.store(g + 36, tl.sum(lo36 + hi36, axis=0))
        tl.store(g + 37, tl.sum(lo37 + hi37, axis=0))
        tl.store(g + 38, tl.sum(lo38 + hi38, axis=0))
        tl.store(g + 39, tl.sum(lo39 + hi39, axis=0))
        tl.store(g + 40, tl.sum(lo40 + hi40, axis=0))
        tl.store(g + 41, tl.sum(lo41 + hi41, axis=0))
        tl.store(g + 42, tl.sum(lo42 + hi42, axis=0))
        tl.store(grad_q_ptr + offs.to(tl.int64) * C + c, dx_lo + dx_hi, mask=mask)


def pack_parameters(matrices: List[Tensor], biases: List[Tensor], factors: List[Tensor]) -> Float[Tensor, "c 43"]:
    """The entropy model's effective parameters, 43 per channel in the kernel's order (differentiable)."""
    channels = matrices[0].shape[0]
    parts = []
    for i, (matrix, bias) in enumerate(zip(matrices, biases)):
        parts.append(F.softplus(matrix).reshape(channels, -1))  # [C, out * in], row o, column i
        parts.append(bias.reshape(channels, -1))
        if i < len(factors):
            parts.append(torch.tanh(factors[i]).reshape(channels, -1))
    return torch.cat(parts, dim=1)


@functools.lru_cache(maxsize=64)
def _programs(offsets: Tuple[int, ...], device: str) -> Tuple[Tensor, Tensor, Tensor, int]:
    """The kernel's program table for these level offsets, made once per device (no host-to-device copy per
    step): the offsets (int64), each program's level and block within it (int32), and the most blocks of a level."""
    blocks = [triton.cdiv(max(hi - lo, 1), BLOCK_LATENTS) for lo, hi in zip(offsets, offsets[1:])]
    levels = [level for level, count in enumerate(blocks) for _ in range(count)]
    within = [block for count in blocks for block in range(count)]
    return (
        torch.tensor(offsets, dtype=torch.int64, device=device),
        torch.tensor(levels, dtype=torch.int32, device=device),
        torch.tensor(within, dtype=torch.int32, device=device),
        max(blocks),
    )


class _FusedRate(torch.autograd.Function):
    """Total bits of ``q`` [n, C] under the packed parameters ([levels x C, 43]: one set per level and channel, or
    [C, 43] for all rows as one level); the gradients come from the same kernel launch."""

    @staticmethod
    def forward(ctx, q: Tensor, packed: Tensor, bound: float, offsets: Tuple[int, ...]) -> Tensor:  # noqa: ANN001
        n, channels = q.shape
        levels = len(offsets) - 1
        offsets_t, program_level, program_block, max_blocks = _programs(offsets, str(q.device))
        programs = program_level.shape[0]
        # Partial sums by (level, block, channel): summed over blocks in a fixed order, so the result is
        # deterministic and never mixes levels. With one level this is the factorized layout [blocks, C]. A level
        # with fewer blocks than the largest leaves zeros (one memset; no program computes for nothing).
        need_grad = any(ctx.needs_input_grad[:2])
        partial = torch.empty if levels == 1 else torch.zeros
        bits = partial(levels, max_blocks, channels, device=q.device, dtype=torch.float32)
        if need_grad:
            grad_q = torch.empty_like(q)
            grad_packed = partial(levels, max_blocks, channels, NUM_PARAMETERS, device=q.device, dtype=torch.float32)
        else:
            grad_q = grad_packed = bits  # pointers the kernel does not touch
        _rate_kernel[(programs, channels)](
            q, packed, offsets_t, program_level, program_block, bits, grad_q, grad_packed, bound, max_blocks,
            C=channels, BLOCK=BLOCK_LATENTS, NEED_GRAD=need_grad,
        )  # fmt: skip
        if need_grad:
            ctx.save_for_backward(grad_q, grad_packed.sum(1).reshape(levels * channels, NUM_PARAMETERS))
        return bits.sum()

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: ANN001, ANN205
        grad_q, grad_packed = ctx.saved_tensors
        return grad_q * grad, grad_packed * grad, None, None


def fused_rate_bits(
    q: Float[Tensor, "n channels"],
    matrices: List[Tensor],
    biases: List[Tensor],
    factors: List[Tensor],
    bound: float,
    offsets: Optional[Sequence[int]] = None,
) -> Float[Tensor, ""]:
    """-sum log2 P(q) under the factorized model with these raw parameters, in float32 (autocast off).

    ``offsets``: where each level's rows start (``Latents.offsets``) when the parameters hold one CDF per (level,
    channel), set ``level * channels + channel`` (``PerLevelEntropyModel``); None: one CDF per channel for all rows.
    """
    widths = tuple(m.shape[1] for m in matrices[:-1])
    if widths != FUSED_FILTERS or matrices[0].shape[2] != 1 or matrices[-1].shape[1] != 1:
        raise ValueError(f"the fused rate kernel is written for entropy filters {FUSED_FILTERS}, got {widths}")
    n, channels = q.shape
    levels = (0, n) if offsets is None else tuple(int(o) for o in offsets)
    if levels[0] != 0 or levels[-1] != n or any(b < a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"level offsets {list(levels)} do not cover the {n} rows of the latents")
    if matrices[0].shape[0] != (len(levels) - 1) * channels:
        raise ValueError(f"{matrices[0].shape[0]} parameter sets for {len(levels) - 1} levels x {channels} channels")
    with torch.autocast(device_type=q.device.type, enabled=False):
        packed = pack_parameters(
            [m.float() for m in matrices], [b.float() for b in biases], [f.float() for f in factors]
        )
        return _FusedRate.apply(q.float().contiguous(), packed.contiguous(), float(bound), levels)
