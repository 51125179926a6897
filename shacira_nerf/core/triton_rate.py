"""The rate term in one Triton kernel: bits of every latent under the factorized entropy model, and their gradients.

The torch reference (``FactorizedEntropyModel.likelihood`` then ``bits_from_likelihoods``) evaluates the CDF MLP at
x - 1/2 and x + 1/2 as [channels, width, n] tensors, layer by layer: about 40 elementwise kernels forward and as many
backward, each reading and writing a tensor 3x the size of the latent table (13.8 M latents in nerfacto's main
grid). This kernel does, per block of latents and all in registers: both MLP evaluations, the sign trick, the bound,
the log2, and, when a gradient is wanted, the whole backward pass by hand (the MLP is recomputed layer by layer
rather than stored). It writes the gradient with respect to each latent and per-block partial sums of the bits and
of the gradients of the (effective) entropy parameters; torch sums the partials, so the result is deterministic.

Because the kernel computes the gradient in the same pass as the value, its autograd function saves the gradient and
its backward only scales it: one pass over the latents per step instead of two.

The MLP is taken in an effective, padded form so that every layer is the same [WP, WP] affine map: the softplus of
each matrix (non-negative weights), the bias, and tanh of each factor (0 for the last layer, which has no
nonlinearity), zero-padded to a power-of-two width WP. Padded rows stay exactly zero through every layer, so the
padded MLP computes exactly the model's MLP; torch differentiates the (tiny) packing.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from jaxtyping import Float
from torch import Tensor

BLOCK_LATENTS = 256
"""Latents per program."""


@triton.jit
def _tanh(a):
    return 2.0 * tl.sigmoid(2.0 * a) - 1.0


@triton.jit
def _layer(h, w_ptr, b_ptr, t_ptr, WP: tl.constexpr):
    """One effective layer on a [BLOCK, WP] tile: pre-activation a = W h + b, tanh(a), output a + T tanh(a)."""
    o = tl.arange(0, WP)
    w = tl.load(w_ptr + o[:, None] * WP + o[None, :])  # [out, in]
    b = tl.load(b_ptr + o)
    t = tl.load(t_ptr + o)
    a = tl.sum(h[:, None, :] * w[None, :, :], axis=2) + b[None, :]
    th = _tanh(a)
    return a, th, a + t[None, :] * th


@triton.jit
def _input_of_layer(h0, w_ptr, b_ptr, t_ptr, upto: tl.constexpr, WP: tl.constexpr):
    """The MLP's activation entering layer ``upto`` (``upto`` = number of layers: the output)."""
    h = h0
    for j in tl.static_range(upto):
        _, _, h = _layer(h, w_ptr + j * WP * WP, b_ptr + j * WP, t_ptr + j * WP, WP)
    return h


@triton.jit
def _rate_kernel(
    q_ptr, w_ptr, b_ptr, t_ptr, bits_ptr, grad_q_ptr, gw_ptr, gb_ptr, gt_ptr, n, bound,
    C: tl.constexpr, NL: tl.constexpr, WP: tl.constexpr, BLOCK: tl.constexpr, NEED_GRAD: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    c = tl.program_id(1)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    v = tl.load(q_ptr + offs.to(tl.int64) * C + c, mask=mask, other=0.0)
    cols = tl.arange(0, WP)
    first = (cols == 0)[None, :]
    w_c = w_ptr + c * NL * WP * WP
    b_c = b_ptr + c * NL * WP
    t_c = t_ptr + c * NL * WP
    h_lo = tl.where(first, (v - 0.5)[:, None], 0.0)
    h_hi = tl.where(first, (v + 0.5)[:, None], 0.0)
    z_lo = tl.sum(tl.where(first, _input_of_layer(h_lo, w_c, b_c, t_c, NL, WP), 0.0), axis=1)
    z_hi = tl.sum(tl.where(first, _input_of_layer(h_hi, w_c, b_c, t_c, NL, WP), 0.0), axis=1)
    total = z_lo + z_hi
    s = tl.where(total > 0, -1.0, tl.where(total < 0, 1.0, 0.0))
    sig_lo = tl.sigmoid(s * z_lo)
    sig_hi = tl.sigmoid(s * z_hi)
    diff = sig_hi - sig_lo
    p = tl.abs(diff)
    kept = p > bound  # torch.clamp_min passes no gradient at the bound itself
    p_bounded = tl.where(kept, p, bound)
    bits = tl.where(mask, -tl.log2(p_bounded), 0.0)
    out = (pid * C + c).to(tl.int64)
    tl.store(bits_ptr + out, tl.sum(bits, axis=0))
    if NEED_GRAD:
        # d bits / d p = -1 / (p ln 2) where the bound is not active; d p / d diff = sign(diff).
        sign_diff = tl.where(diff > 0, 1.0, tl.where(diff < 0, -1.0, 0.0))
        dp = tl.where(mask & kept, -1.4426950408889634 / p_bounded, 0.0) * sign_diff
        dz_hi = dp * s * sig_hi * (1.0 - sig_hi)
        dz_lo = -dp * s * sig_lo * (1.0 - sig_lo)
        g_lo = tl.where(first, dz_lo[:, None], 0.0)  # gradient entering the output of the last layer
        g_hi = tl.where(first, dz_hi[:, None], 0.0)
        o = tl.arange(0, WP)
        for j in tl.static_range(NL - 1, -1, -1):  # layers from the last to the first
            wj, bj, tj = w_c + j * WP * WP, b_c + j * WP, t_c + j * WP
            w = tl.load(wj + o[:, None] * WP + o[None, :])
            t = tl.load(tj + o)
            in_lo = _input_of_layer(h_lo, w_c, b_c, t_c, j, WP)
            in_hi = _input_of_layer(h_hi, w_c, b_c, t_c, j, WP)
            _, th_lo, _ = _layer(in_lo, wj, bj, tj, WP)
            _, th_hi, _ = _layer(in_hi, wj, bj, tj, WP)
            da_lo = g_lo * (1.0 + t[None, :] * (1.0 - th_lo * th_lo))
            da_hi = g_hi * (1.0 + t[None, :] * (1.0 - th_hi * th_hi))
            g_t = tl.sum(g_lo * th_lo + g_hi * th_hi, axis=0)
            g_b = tl.sum(da_lo + da_hi, axis=0)
            g_w = tl.sum(da_lo[:, :, None] * in_lo[:, None, :] + da_hi[:, :, None] * in_hi[:, None, :], axis=0)
            slot = out * NL + j
            tl.store(gt_ptr + slot * WP + o, g_t)
            tl.store(gb_ptr + slot * WP + o, g_b)
            tl.store(gw_ptr + slot * WP * WP + o[:, None] * WP + o[None, :], g_w)
            g_lo = tl.sum(da_lo[:, :, None] * w[None, :, :], axis=1)  # [BLOCK, in]
            g_hi = tl.sum(da_hi[:, :, None] * w[None, :, :], axis=1)
        dv = tl.sum(tl.where(first, g_lo + g_hi, 0.0), axis=1)
        tl.store(grad_q_ptr + offs.to(tl.int64) * C + c, dv, mask=mask)


def packed_parameters(
    matrices: list, biases: list, factors: list
) -> Tuple[Float[Tensor, "c nl wp wp"], Float[Tensor, "c nl wp"], Float[Tensor, "c nl wp"]]:
    """The entropy model's effective layers zero-padded to one width (differentiable in the raw parameters)."""
    widths = [m.shape[1] for m in matrices] + [m.shape[2] for m in matrices]
    wp = max(2, triton.next_power_of_2(max(widths)))
    w, b, t = [], [], []
    for i, (matrix, bias) in enumerate(zip(matrices, biases)):
        out_dim, in_dim = matrix.shape[1], matrix.shape[2]
        w.append(F.pad(F.softplus(matrix), (0, wp - in_dim, 0, wp - out_dim)))
        b.append(F.pad(bias[..., 0], (0, wp - out_dim)))
        if i < len(factors):
            t.append(F.pad(torch.tanh(factors[i][..., 0]), (0, wp - out_dim)))
        else:
            t.append(torch.zeros_like(b[-1]))
    return torch.stack(w, 1), torch.stack(b, 1), torch.stack(t, 1)


class _FusedRate(torch.autograd.Function):
    """Total bits of ``q`` [n, C] under the packed MLP; the gradients come from the same kernel launch."""

    @staticmethod
    def forward(ctx, q: Tensor, w: Tensor, b: Tensor, t: Tensor, bound: float) -> Tensor:  # noqa: ANN001
        n, channels = q.shape
        nl, wp = w.shape[1], w.shape[2]
        programs = triton.cdiv(max(n, 1), BLOCK_LATENTS)
        need_grad = any(ctx.needs_input_grad[:4])
        dev = q.device
        bits = torch.empty(programs, channels, device=dev, dtype=torch.float32)
        if need_grad:
            grad_q = torch.empty_like(q)
            gw = torch.empty(programs, channels, nl, wp, wp, device=dev, dtype=torch.float32)
            gb = torch.empty(programs, channels, nl, wp, device=dev, dtype=torch.float32)
            gt = torch.empty(programs, channels, nl, wp, device=dev, dtype=torch.float32)
        else:
            grad_q = gw = gb = gt = bits  # unused pointers
        _rate_kernel[(programs, channels)](
            q, w, b, t, bits, grad_q, gw, gb, gt, n, bound,
            C=channels, NL=nl, WP=wp, BLOCK=BLOCK_LATENTS, NEED_GRAD=need_grad,
        )  # fmt: skip
        if need_grad:
            ctx.save_for_backward(grad_q, gw.sum(0), gb.sum(0), gt.sum(0))
        return bits.sum()

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: ANN001, ANN205
        grad_q, gw, gb, gt = ctx.saved_tensors
        return grad_q * grad, gw * grad, gb * grad, gt * grad, None


def fused_rate_bits(
    q: Float[Tensor, "n channels"], matrices: list, biases: list, factors: list, bound: float
) -> Float[Tensor, ""]:
    """-sum log2 P(q) under the factorized model with these raw parameters, in float32 (autocast off)."""
    with torch.autocast(device_type=q.device.type, enabled=False):
        w, b, t = packed_parameters(
            [m.float() for m in matrices], [x.float() for x in biases], [f.float() for f in factors]
        )
        return _FusedRate.apply(q.float().contiguous(), w.contiguous(), b.contiguous(), t.contiguous(), float(bound))
