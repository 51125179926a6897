"""``--pipeline.model.compile``: nerfacto's hot functions compiled with ``torch.compile`` while the model trains.

Why: on a GPU a shacira training step is bound by the host launching ~1100 small kernels, not by the GPU; compiling
fuses the elementwise chains of the fields, samplers and renderers (and their backward) into few kernels.

What is compiled, and why not more: the main field's forward, each proposal network's density function, the
proposal sampler's initial (uniform) sampler, and the RGB, accumulation and expected-depth renderers. Each is a
function of tensors whose shapes are fixed in training. The PDF sampler and the median-depth renderer stay eager:
both search sorted arrays, and inductor's ``searchsorted`` kernel fails to compile with the Triton of torch 2.11's
CUDA build (Triton 3.6: "Loop-carried variable low has initial type <['1'], int64> but is re-assigned to <['64'],
int64>", seen on the H200 on 2026-12-02). The code between them stays eager on purpose: nerfacto's proposal sampler reads its step counter and
update schedule in Python, and a compiled frame would guard on those integers and recompile every step. The grids'
quantization (Python state: a step-scoped cache and the annealing schedule) and the Triton lookup (hand-launched
kernels) are opaque to the compiler (``torch.compiler.disable`` in ``core``).

Evaluation and rendering call the original functions: other batch shapes, no gradients, and no reason to spend
minutes compiling for a few images.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn


class CompiledWhileTraining:
    """``fn`` through ``torch.compile`` while ``owner`` is in training mode, ``fn`` itself otherwise."""

    def __init__(self, owner: nn.Module, fn: Callable[..., Any], backend: str) -> None:
        self.owner = owner
        self.fn = fn
        self.compiled = torch.compile(fn, backend=backend)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return (self.compiled if self.owner.training else self.fn)(*args, **kwargs)


def compile_hot_paths(model: nn.Module, backend: str) -> None:
    """Route a nerfacto-structured model's per-step functions through ``CompiledWhileTraining`` (in place, once)."""

    def wrap(module: nn.Module) -> None:
        module.forward = CompiledWhileTraining(model, module.forward, backend)

    wrap(model.field)
    for renderer in ("renderer_rgb", "renderer_accumulation", "renderer_expected_depth"):
        wrap(getattr(model, renderer))
    wrap(model.proposal_sampler.initial_sampler)
    model.density_fns = [CompiledWhileTraining(model, fn, backend) for fn in model.density_fns]
