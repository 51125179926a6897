"""The lookup seam and the Triton kernels, against the torch reference, values and gradients.

On a machine without CUDA the Triton kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set here before
they are imported); on a GPU (``python3 -m pytest tests/test_lookup.py`` on the device machine) the same tests run
the compiled kernels on CUDA.
"""

from __future__ import annotations

import os

import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel is defined

import pytest  # noqa: E402

from shacira_nerf.core.entropy_model import FactorizedEntropyModel  # noqa: E402
from shacira_nerf.core.grid import ShaciraGrid  # noqa: E402
from shacira_nerf.core.hash_grid import GridGeometry, hash_grid_interpolate  # noqa: E402
from shacira_nerf.core.lookup import (  # noqa: E402
    LookupBackendError,
    MatrixLookup,
    available_backends,
    resolve_backend_name,
    resolve_lookup,
)
from shacira_nerf.core.per_level_entropy import PerLevelEntropyModel  # noqa: E402
from shacira_nerf.core.quantizer import AnnealedQuantizer  # noqa: E402
from shacira_nerf.core.rate import bits_from_likelihoods  # noqa: E402

DEVICE = torch.device("cuda" if CUDA else "cpu")
FAST = [name for name in available_backends(DEVICE) if name != "torch"]


def _points(n: int, dim: int, seed: int) -> torch.Tensor:
    """Random points plus the domain's corners and faces (where floor(x * scale + 0.5) reaches the resolution)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, dim, generator=g)
    x[0], x[1] = 0.0, 1.0
    x[2, 0] = 1.0
    return x.to(DEVICE)


GEOMETRIES = [
    GridGeometry(3, 4, 2, 40, 6),  # tiny table: dense coarse levels, hashed fine ones with many collisions
    GridGeometry(2, 5, 3, 64, 5),
    GridGeometry(3, 3, 4, 30, 12),  # dense everywhere
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g.dim}d-L{g.num_levels}-T{g.log2_hashmap_size}")
@pytest.mark.parametrize("channels", [1, 2, 3])
def test_triton_lookup_matches_the_reference(geometry: GridGeometry, channels: int) -> None:
    lookup = resolve_lookup("triton", geometry, DEVICE)
    g = torch.Generator().manual_seed(channels)
    table = torch.randn(geometry.offsets[-1], channels, generator=g).to(DEVICE).requires_grad_(True)
    x = _points(517, geometry.dim, channels)  # not a multiple of the block size
    ref = hash_grid_interpolate(table, x, geometry)
    out = lookup(table, x)
    assert out.shape == ref.shape == (517, geometry.num_levels, channels)
    # Compiled kernels may fuse x * scale + 0.5 into one FMA: positions differ in the last bit, values by ~1e-5.
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    grad_out = torch.randn(ref.shape, generator=g).to(DEVICE)
    (grad_ref,) = torch.autograd.grad(ref, table, grad_out)
    (grad,) = torch.autograd.grad(out, table, grad_out)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-4 * float(grad_ref.abs().max()))


def test_triton_lookup_gradient_in_the_points_matches_the_reference() -> None:
    geometry = GEOMETRIES[0]
    lookup = resolve_lookup("triton", geometry, DEVICE)
    table = torch.randn(geometry.offsets[-1], 2, device=DEVICE)
    x = (torch.rand(64, 3, device=DEVICE) * 0.98 + 0.01).requires_grad_(True)
    grad_out = torch.randn(64, geometry.num_levels, 2, device=DEVICE)
    (ref,) = torch.autograd.grad(hash_grid_interpolate(table, x, geometry), x, grad_out)
    (got,) = torch.autograd.grad(lookup(table, x), x, grad_out)
    torch.testing.assert_close(got, ref)


def test_matrix_lookup_is_the_reference_at_its_fixed_points() -> None:
    geometry = GEOMETRIES[1]
    x = _points(300, 2, 3)
    lookup = MatrixLookup(geometry, x)
    table = torch.randn(geometry.offsets[-1], 3, device=DEVICE)
    torch.testing.assert_close(lookup(table, x), hash_grid_interpolate(table, x, geometry), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="fixed points"):
        lookup(table, x[:10])


def _perturbed_entropy_model(channels: int, filters: tuple) -> FactorizedEntropyModel:
    torch.manual_seed(channels + len(filters))
    model = FactorizedEntropyModel(channels, filters)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.to(DEVICE)


def _assert_fused_rate_matches(model, q: torch.Tensor) -> torch.Tensor:
    """The fused rate of ``q`` against the torch reference, value and gradients (into q and every parameter)."""
    q = q.to(DEVICE).requires_grad_(True)
    params = [q, *model.parameters()]
    ref = bits_from_likelihoods(model.likelihood(q))
    fused = model.bits(q, fused=True)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-3)
    for got, want in zip(torch.autograd.grad(fused * 0.5, params), torch.autograd.grad(ref * 0.5, params)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()) + 1e-6)
    return ref.detach()


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_fused_rate_matches_the_reference(channels: int) -> None:
    model = _perturbed_entropy_model(channels, (3, 3, 3))
    g = torch.Generator().manual_seed(7)
    q = torch.randn(1000, channels, generator=g) * 4
    q[:200] = torch.round(q[:200])  # integers, as after annealing
    q[200:210] = 80.0  # far in the tail: the likelihood bound is active, no gradient there
    _assert_fused_rate_matches(model, q)


def test_other_entropy_filters_keep_the_reference_rate() -> None:
    model = _perturbed_entropy_model(2, (2, 5))
    with pytest.raises(ValueError, match="written for entropy filters"):
        model.bits(torch.zeros(4, 2, device=DEVICE), fused=True)
    if "triton" in FAST:
        grid = ShaciraGrid(GEOMETRIES[0], entropy_filters=(2, 5), implementation="triton", device=DEVICE)
        assert grid.implementation == "triton" and not grid.fused_rate


def test_fused_rate_without_gradients_is_the_same_number() -> None:
    model = _perturbed_entropy_model(2, (3, 3, 3))
    q = torch.randn(300, 2, device=DEVICE) * 3
    with torch.no_grad():
        torch.testing.assert_close(model.bits(q, fused=True), model.bits(q), rtol=1e-5, atol=1e-3)


def test_fused_per_level_rate_matches_the_reference() -> None:
    """The per-level layout: each program reads its level's rows and parameter set (levels shorter and longer than
    a block of the kernel), values and gradients against the torch reference, and without gradients."""
    torch.manual_seed(5)
    offsets = [0, 3, 260, 300]
    model = PerLevelEntropyModel(2, offsets)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model = model.to(DEVICE)
    g = torch.Generator().manual_seed(8)
    q = torch.randn(300, 2, generator=g) * 4
    q[:150] = torch.round(q[:150])
    q[250:255] = 80.0  # the bound is active: no gradient there
    ref = _assert_fused_rate_matches(model, q)
    q = q.to(DEVICE)
    with torch.no_grad():
        torch.testing.assert_close(model.bits(q, fused=True), ref, rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="300 rows"):
        model.bits(q[:299], fused=True)


def _grid_pair(backend: str, geometry: GridGeometry) -> tuple:
    """A grid on ``backend`` and a torch-reference grid with the same parameters (and the same quantizer)."""
    torch.manual_seed(0)
    quantizer = AnnealedQuantizer()
    quantizer.set_progress(3, 10)  # annealing: soft rounding, gradients everywhere
    ref = ShaciraGrid(geometry, 2, 4, quantizer=quantizer, implementation="torch").to(DEVICE)
    fast = ShaciraGrid(geometry, 2, 4, quantizer=quantizer, implementation=backend, device=DEVICE).to(DEVICE)
    with torch.no_grad():
        ref.latents.values.uniform_(-3, 3)
        for p in ref.entropy_model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    fast.load_state_dict(ref.state_dict())
    return fast, ref


@pytest.mark.parametrize("backend", available_backends(DEVICE))
def test_every_backend_trains_a_whole_grid_like_the_reference(backend: str) -> None:
    geometry = GridGeometry(3, 4, 2, 40, 7)
    fast, ref = _grid_pair(backend, geometry)
    assert fast.implementation == backend
    x = _points(700, 3, 11)
    grads = []
    for grid in (fast, ref):
        grid.train()
        features = grid(x)
        loss = (features * torch.linspace(-1, 1, features.shape[1], device=DEVICE)).square().mean()
        loss = loss + 1e-3 * grid.rate_bits() / grid.latents.num_latents
        grads.append((features, torch.autograd.grad(loss, list(grid.parameters()))))
    (f_fast, g_fast), (f_ref, g_ref) = grads
    torch.testing.assert_close(f_fast, f_ref, rtol=1e-4, atol=1e-5)
    for got, want in zip(g_fast, g_ref):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3 * float(want.abs().max()) + 1e-7)


def test_one_quantization_per_step_feeds_every_lookup_and_the_rate() -> None:
    geometry = GridGeometry(3, 3, 2, 16, 6)
    grid = ShaciraGrid(geometry).to(DEVICE).train()
    grid.set_progress(1, 10)
    calls = []
    grid.quantizer.register_forward_hook(lambda *args: calls.append(1))
    optimizer = torch.optim.Adam(grid.parameters(), lr=1e-2, foreach=True)
    x = _points(50, 3, 0)
    for step in range(3):
        calls.clear()
        loss = grid(x).square().sum() + grid(x[:10]).sum() + 1e-3 * grid.rate_bits()  # two lookups and the rate
        loss.backward()
        assert len(calls) == 1, f"step {step} quantized {len(calls)} times"
        optimizer.step()
        optimizer.zero_grad()
    # Gradient accumulation (two backward passes, no optimizer step between): the second pass re-quantizes.
    calls.clear()
    grid(x).sum().backward()
    grid(x).sum().backward()
    assert len(calls) == 2
    # A new point in the schedule re-quantizes; eval mode rounds.
    grid.set_progress(9, 10)
    with torch.no_grad():
        grid.eval()
        assert torch.equal(grid.lookup_latents(), torch.round(grid.latents.values))


@pytest.mark.parametrize("temperature", [1.0, 0.3, 0.1])
def test_sga_kernel_matches_the_reference_on_its_own_uniforms(temperature: float) -> None:
    """``triton_sga``: the relaxed sample and its gradient equal ``sga_round`` given the kernel's uniforms (which are
    in (0, 1), and the same for the same seed)."""
    from shacira_nerf.core.quantizer import sga_round
    from shacira_nerf.core.triton_sga import fused_sga_round, uniforms

    g = torch.Generator().manual_seed(5)
    x = (torch.randn(2500, 2, generator=g) * 3).to(DEVICE).requires_grad_(True)
    weights = torch.randn(2500, 2, generator=g).to(DEVICE)
    fast = fused_sga_round(x, temperature, 1234)
    (grad_fast,) = torch.autograd.grad((fast * weights).sum(), x)
    u = uniforms(x.numel(), 1234, x.device).view_as(x)
    assert 0 < u.min() and u.max() < 1 and u.std() > 0.25  # uniform on (0, 1): std 0.289
    ref = sga_round(x, temperature, u)
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), x)
    torch.testing.assert_close(fast, ref, rtol=0, atol=2e-5)
    torch.testing.assert_close(grad_fast, grad_ref, rtol=1e-4, atol=1e-4 / temperature)
    assert torch.equal(fused_sga_round(x, temperature, 1234), fast)  # the seed fixes the sample
    assert not torch.equal(fused_sga_round(x, temperature, 1235), fast)


def test_a_grid_with_the_sga_kernel_quantizes_through_it_while_annealing() -> None:
    """``sga_kernel``: on the Triton lookup the grid's SGA sample comes from the kernel (floor(x) < q < floor(x) + 1,
    seeded from torch's CPU generator: the same global seed, the same table); straight-through after annealing."""
    geometry = GridGeometry(3, 3, 4, 16, 8)
    backend = "triton" if "triton" in FAST else "torch"
    quantizer = AnnealedQuantizer(mode="sga", anneal_fraction=0.5).train()
    grid = ShaciraGrid(geometry, 2, 4, quantizer=quantizer, implementation=backend, device=DEVICE, sga_kernel=True)
    grid = grid.to(DEVICE).train()
    with torch.no_grad():
        grid.latents.values.copy_(torch.randn_like(grid.latents.values) * 2)
    assert grid.sga_kernel == (backend == "triton")
    quantizer.set_progress(10, 100)
    torch.manual_seed(3)
    first = grid.quantized_latents()
    torch.manual_seed(3)
    assert torch.equal(grid.quantized_latents(), first)
    x = grid.latents.values.detach()
    assert ((first >= torch.floor(x)) & (first <= torch.floor(x) + 1)).all()
    first.sum().backward()
    grad = grid.latents.values.grad  # sigmoid' > 0, except where float32 saturates the sigmoid to exactly 0 or 1
    assert grad is not None and (grad >= 0).all() and (grad > 0).float().mean() > 0.9
    quantizer.set_progress(60, 100)  # past annealing: straight-through rounding, no kernel
    assert torch.equal(grid.quantized_latents(), torch.round(x))


def test_backend_names_resolve_once_with_one_line_errors() -> None:
    geometry = GEOMETRIES[0]
    assert resolve_backend_name("auto", "cpu") == "torch"  # Triton's interpreter is never chosen automatically
    assert resolve_lookup("torch", geometry, "cpu").name == "torch"
    with pytest.raises(LookupBackendError, match=r"unknown lookup backend 'cuda'.*this machine has torch"):
        resolve_backend_name("cuda", "cpu")
    with pytest.raises(LookupBackendError, match="tiny-cuda-nn needs a CUDA device"):
        resolve_backend_name("tcnn", "cpu")
    previous = os.environ.pop("TRITON_INTERPRET", None)
    try:
        with pytest.raises(LookupBackendError, match=r"'triton' cannot run here: Triton kernels need a CUDA device"):
            resolve_backend_name("triton", "cpu")
    finally:
        if previous is not None:
            os.environ["TRITON_INTERPRET"] = previous
    if CUDA:
        assert resolve_backend_name("auto", "cuda") == "triton"


def test_a_backend_this_machine_cannot_run_fails_when_the_model_is_built() -> None:
    from nerfstudio.data.scene_box import SceneBox

    from shacira_nerf.nerf.model import ShaciraConfigError, ShaciraModelConfig

    config = ShaciraModelConfig(implementation="tcnn", num_levels=2, log2_hashmap_size=8, max_res=32)
    with pytest.raises(ShaciraConfigError, match=r"pipeline\.model\.implementation 'tcnn': .*this machine has torch"):
        config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1, metadata={},
                     device="cpu")  # fmt: skip
