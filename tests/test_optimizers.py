"""The Adam config of shacira's method configs: fused kernel on a GPU, torch's default elsewhere, same updates."""

from __future__ import annotations

import torch

from shacira_nerf.nerf.optimizers import FusedAdamOptimizerConfig


def _steps(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> torch.Tensor:
    for i in range(5):
        optimizer.zero_grad()
        (param.sin() * (i + 1)).sum().backward()
        optimizer.step()
    return param.detach()


def test_fused_only_on_gpu_parameters_by_default_and_same_updates() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = torch.linspace(-2, 2, 37, device=device)
    config = FusedAdamOptimizerConfig(lr=1e-2, eps=1e-15)
    param = start.clone().requires_grad_(True)
    default = config.setup([param])
    assert bool(default.defaults["fused"]) == (device == "cuda")
    got = _steps(default, param)
    reference = start.clone().requires_grad_(True)
    want = _steps(torch.optim.Adam([reference], lr=1e-2, eps=1e-15, foreach=False), reference)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    forced = FusedAdamOptimizerConfig(lr=1e-2, fused=False).setup([start.clone().requires_grad_(True)])
    assert not forced.defaults["fused"]
