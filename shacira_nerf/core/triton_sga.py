"""Stochastic Gumbel annealing (``quantizer.sga_round``) in one Triton kernel, its noise drawn inside it.

The torch reference draws a uniform tensor of the latents' size, then runs about 17 elementwise kernels forward and
10 backward, each reading or writing a tensor the size of the latent table (13.8 M latents in nerfacto's main grid):
on an H200, 2.8 ms of a 37 ms step (benchmarks/README.md, run F). Here one program reads a block of latents, draws
its uniforms with Triton's counter-based generator (Philox, keyed by a per-call seed and the latent's index, so the
numbers do not depend on block sizes or on the device), and writes the relaxed sample and its derivative; the
backward pass is one multiply.

The uniforms are not torch's: the same seed gives the same sample on every device running this kernel, but not the
sample ``sga_round`` would draw from torch's generator. The tests compare the two on the same uniforms
(``uniforms``, the kernel's draws written out).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from jaxtyping import Float
from torch import Tensor

BLOCK = 1024
"""Latents per program."""


@triton.jit
def _tanh(x):
    # tanh through the sigmoid: Triton's interpreter and its CUDA backend both have exp; r and 1 - r lie in [0, 1].
    return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0


@triton.jit
def _uniform(seed, offs):
    """Uniforms in (0, 1), clamped as ``quantizer.logistic_noise`` clamps: finite logistic noise."""
    u = tl.rand(seed, offs)
    return tl.minimum(tl.maximum(u, 1.1754943508222875e-38), 1.0 - 1.1920928955078125e-07)


@triton.jit
def _sga_kernel(x_ptr, q_ptr, d_ptr, n, seed, inv_t, NEED_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    u = _uniform(seed, offs)
    floor = tl.floor(x)
    r = x - floor
    a = _tanh(r)
    b = _tanh(1.0 - r)
    z = ((a - b) * inv_t + tl.log(u) - tl.log(1.0 - u)) * inv_t
    z = tl.minimum(tl.maximum(z, -80.0), 80.0)  # the sigmoid is 0 or 1 in float32 beyond; keeps exp finite
    s = 1.0 / (1.0 + tl.exp(-z))
    tl.store(q_ptr + offs, floor + s, mask=mask)
    if NEED_GRAD:
        # d/dx: sigmoid' x (1/T) x d logit/dx, d logit/dx = (1/T) (tanh'(r) + tanh'(1 - r)); floor has none.
        tl.store(d_ptr + offs, s * (1.0 - s) * inv_t * inv_t * ((1.0 - a * a) + (1.0 - b * b)), mask=mask)


@triton.jit
def _uniform_kernel(u_ptr, n, seed, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(u_ptr + offs, _uniform(seed, offs), mask=offs < n)


class _FusedSGA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, temperature: float, seed: int) -> Tensor:  # noqa: ANN001
        flat = x.detach().float().contiguous().view(-1)
        n = flat.numel()
        q = torch.empty_like(flat)
        need_grad = ctx.needs_input_grad[0]
        d = torch.empty_like(flat) if need_grad else q
        if n:
            _sga_kernel[(triton.cdiv(n, BLOCK),)](
                flat, q, d, n, seed, 1.0 / temperature, NEED_GRAD=need_grad, BLOCK=BLOCK
            )
        if need_grad:
            ctx.save_for_backward(d.view(x.shape))
        return q.view(x.shape).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: ANN001, ANN205
        (d,) = ctx.saved_tensors
        return (grad * d).to(grad.dtype), None, None


def fused_sga_round(x: Float[Tensor, "*shape"], temperature: float, seed: int) -> Float[Tensor, "*shape"]:
    """``sga_round(x, temperature, uniforms(x.numel(), seed))`` as one kernel (float32 inside); differentiable in x."""
    if temperature <= 0:
        raise ValueError(f"SGA temperature must be > 0, got {temperature}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _FusedSGA.apply(x, float(temperature), int(seed))


def uniforms(n: int, seed: int, device: torch.device) -> Float[Tensor, "n"]:  # noqa: F821 - jaxtyping dim name
    """The kernel's uniforms for ``seed``, written out (for tests against the torch reference)."""
    out = torch.empty(n, device=device, dtype=torch.float32)
    if n:
        _uniform_kernel[(triton.cdiv(n, BLOCK),)](out, n, seed, BLOCK=BLOCK)
    return out
