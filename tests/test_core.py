"""The compression core on its own: quantizer, entropy model, rate, hash grid, decoder, ShaciraGrid."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shacira_nerf.core import (
    AnnealedQuantizer,
    FactorizedEntropyModel,
    GridGeometry,
    ShaciraGrid,
    bits_from_likelihoods,
    hash_grid_lookup,
    sga_round,
    soft_round,
    ste_round,
)
from shacira_nerf.core.hash_grid import corner_indices_and_weights, hash_grid_interpolate


def test_soft_rounding_approaches_hard_rounding_as_schedule_ends() -> None:
    x = torch.linspace(-3, 3, 10001)
    q = AnnealedQuantizer(alpha_start=1.0, alpha_end=32.0, anneal_fraction=0.95).train()
    errors = []
    for step in (0, 250, 500, 750, 949):
        q.set_progress(step, 1000)
        assert q.annealing
        errors.append(float((q(x) - torch.round(x)).abs().mean()))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 0.15  # nearly the identity at the start
    assert errors[-1] < 0.03  # nearly hard rounding at the end of annealing (alpha = 32)


def test_rounding_schedule_resumes_from_a_checkpoint() -> None:
    """The schedule's progress survives save/load (resume), including the host copy the forward pass reads."""
    trained = AnnealedQuantizer().train()
    trained.set_progress(333, 1000)
    assert trained.progress_value == float(trained.progress)  # host copy == the float32 buffer, to the bit
    resumed = AnnealedQuantizer().train()
    resumed.load_state_dict(trained.state_dict())
    assert resumed.alpha == trained.alpha and resumed.annealing
    x = torch.linspace(-2, 2, 101)
    assert torch.equal(resumed(x), trained(x))


def test_straight_through_after_annealing_and_hard_rounding_in_eval() -> None:
    q = AnnealedQuantizer(anneal_fraction=0.95).train()
    q.set_progress(960, 1000)
    assert not q.annealing
    x = torch.tensor([0.2, 0.7, -1.6, 2.49], requires_grad=True)
    y = q(x)
    assert torch.equal(y, torch.round(x.detach()))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # identity gradient
    q.eval()
    q.set_progress(0, 1000)  # even early in training, eval rounds exactly
    assert torch.equal(q(x.detach()), torch.round(x.detach()))


def test_soft_round_limits_and_gradient() -> None:
    x = torch.tensor([0.1, 0.4, 0.6, 1.25], requires_grad=True)
    assert torch.allclose(soft_round(x, 1e-3), x, atol=1e-3)
    assert torch.allclose(soft_round(x, 200.0), torch.round(x), atol=1e-6)
    soft_round(x, 4.0).sum().backward()
    assert (x.grad > 0).all()
    assert torch.equal(ste_round(torch.tensor([1.4, -0.6])), torch.tensor([1.0, -1.0]))


def _sga(progress: int, anneal_fraction: float = 0.9) -> AnnealedQuantizer:
    q = AnnealedQuantizer(anneal_fraction=anneal_fraction, mode="sga", temperature_start=1.0, temperature_end=0.1)
    q.train().set_progress(progress, 1000)
    return q


def test_sga_samples_lie_between_floor_and_ceil_and_gradients_reach_the_latents() -> None:
    x = (torch.rand(4000, generator=torch.Generator().manual_seed(0)) * 8 - 4).requires_grad_()
    q = _sga(0)
    assert q.sampling and q.temperature == 1.0
    y = q(x, generator=torch.Generator().manual_seed(1))
    floor = torch.floor(x.detach())
    assert bool(((y >= floor) & (y <= floor + 1)).all())
    assert float((y.detach() - torch.round(x.detach())).abs().mean()) > 0.1  # relaxed and random at T = 1, not rounding
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().min()) > 0
    # The caller's randomness decides the sample: the same uniforms give the same numbers, others differ.
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(2))
    assert torch.equal(q(x, noise=u), q(x, noise=u.clone()))
    assert not torch.equal(q(x, noise=u), q(x, noise=torch.rand(x.shape)))
    with pytest.raises(ValueError):
        q(x, noise=u[:10])


def test_sga_at_low_temperature_picks_an_integer_the_nearer_more_often() -> None:
    g = torch.Generator().manual_seed(0)
    for r in (0.1, 0.3, 0.45, 0.55, 0.7, 0.9):
        x = torch.full((20000,), -2.0 + r)
        cold = sga_round(x, 1e-3, torch.rand(x.shape, generator=g))
        assert bool(((cold == -2.0) | (cold == -1.0)).all()), r  # exactly floor or ceil
        ceil_share = float((sga_round(x, 0.5, torch.rand(x.shape, generator=g)) > -1.5).float().mean())
        assert (ceil_share > 0.5) == (r > 0.5), (r, ceil_share)
    # Uniforms at the ends of [0, 1) stay finite: the sample is the floor (u = 0) or the ceiling.
    ends = sga_round(torch.tensor([0.5, 0.5]), 0.1, torch.tensor([0.0, 1.0 - 2**-24]))
    assert torch.equal(ends, torch.tensor([0.0, 1.0]))


def test_sga_temperature_schedule_then_straight_through_and_eval_rounding() -> None:
    """The authors' schedule: geometric from 1.0 to 0.1 over the decay period, straight-through rounding after."""
    assert _sga(0).temperature == 1.0
    assert math.isclose(_sga(450).temperature, 0.1**0.5, rel_tol=1e-6)
    assert math.isclose(_sga(899).temperature, 0.1 ** (899 / 900), rel_tol=1e-5)
    late = _sga(901)  # progress is a float32 buffer: 900 / 1000 is just below 0.9
    assert not late.annealing and not late.sampling
    x = torch.tensor([0.2, 0.7, -1.6, 2.49], requires_grad=True)
    y = late(x)
    assert torch.equal(y, torch.round(x.detach()))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    early = _sga(0).eval()
    assert not early.sampling and torch.equal(early(x.detach()), torch.round(x.detach()))
    assert AnnealedQuantizer().mode == "soft_round"  # core's default is deterministic; the methods choose their own
    with pytest.raises(ValueError):
        AnnealedQuantizer(mode="noise")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AnnealedQuantizer(mode="sga", temperature_start=0.1, temperature_end=1.0)


def test_one_quantized_table_feeds_lookup_and_rate() -> None:
    """With SGA a step quantizes once and passes the table on; a table without gradient is refused in training."""
    g = GridGeometry(dim=2, num_levels=2, min_res=4, max_res=8, log2_hashmap_size=8)
    grid = ShaciraGrid(g, latent_dim=1, feature_dim=1, quantizer=_sga(100)).train()
    x = torch.rand(7, 2)
    q = grid.lookup_latents(generator=torch.Generator().manual_seed(0))
    again = grid.lookup_latents(generator=torch.Generator().manual_seed(0))
    assert torch.equal(q, again) and not torch.equal(q, grid.lookup_latents())
    assert torch.equal(grid(x, q), grid.decoder.per_level(hash_grid_interpolate(q, x, g)))
    assert torch.equal(grid.rate_bits(q), bits_from_likelihoods(grid.entropy_model.likelihood(q)))
    (grid(x, q).sum() + grid.rate_bits(q)).backward()
    assert float(grid.latents.values.grad.abs().sum()) > 0
    with pytest.raises(ValueError):
        grid(x, q.detach())
    with pytest.raises(ValueError):
        grid.rate_bits(q[:3])


def test_entropy_model_pmf_sums_to_one_and_cdf_is_monotone() -> None:
    torch.manual_seed(0)
    em = FactorizedEntropyModel(channels=2)
    with torch.no_grad():  # a non-trivial model, not just the initialisation
        for p in em.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    for channel in range(2):
        pmf = em.pmf(channel, -2000, 2000)
        assert abs(pmf.sum() - 1.0) < 1e-4
        assert (pmf > 0).all()
    x = torch.linspace(-50, 50, 20001).unsqueeze(1).repeat(1, 2)
    c = em.cdf(x).detach()
    assert (c[1:] - c[:-1] >= 0).all()
    assert float(c[0].max()) < 0.1 and float(c[-1].min()) > 0.9


def test_likelihood_is_cdf_difference_and_bits_are_minus_log2() -> None:
    torch.manual_seed(1)
    em = FactorizedEntropyModel(channels=1)
    x = torch.tensor([[-3.0], [0.0], [1.0], [2.5]])
    p = em.likelihood(x)
    expected = em.cdf(x + 0.5) - em.cdf(x - 0.5)
    assert torch.allclose(p, expected, atol=1e-6)
    known = torch.tensor([0.5, 0.25, 0.125, 1.0])
    assert float(bits_from_likelihoods(known)) == pytest.approx(1 + 2 + 3 + 0)
    assert float(bits_from_likelihoods(p)) == pytest.approx(float(-torch.log2(expected).sum()), rel=1e-5)


def test_likelihood_stays_float32_under_autocast() -> None:
    em = FactorizedEntropyModel(channels=2)
    x = torch.randn(100, 2) * 50
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = em.likelihood(x)
        bits = bits_from_likelihoods(p)
    assert p.dtype == torch.float32 and bits.dtype == torch.float32
    assert torch.isfinite(bits)


def test_geometry_dense_coarse_levels_and_sizes() -> None:
    g = GridGeometry(dim=3, num_levels=16, min_res=16, max_res=2048, log2_hashmap_size=19)
    assert g.resolutions[0] == 16 and g.resolutions[-1] == 2049
    assert g.dense[:5] == [True] * 5 and not any(g.dense[5:])
    assert g.level_sizes[0] == 16**3 and all(s == 2**19 for s in g.level_sizes[5:])
    with pytest.raises(ValueError, match="grid dimension"):
        GridGeometry(dim=4, num_levels=2, min_res=4, max_res=8, log2_hashmap_size=10)


@pytest.mark.parametrize("dim", [2, 3])
def test_dense_level_interpolation_reproduces_linear_functions_exactly(dim: int) -> None:
    """A table holding f(vertex) = a.vertex + b is interpolated to f(x) exactly on a dense level."""
    g = GridGeometry(dim=dim, num_levels=1, min_res=8, max_res=8, log2_hashmap_size=12)
    res, scale = g.resolutions[0], g.scales[0]
    assert g.dense[0]
    coords = torch.stack(torch.meshgrid(*[torch.arange(res)] * dim, indexing="ij"), -1).reshape(-1, dim)
    # Flat dense index is sum_d coord_d * res**d.
    index = (coords * (res ** torch.arange(dim))).sum(-1)
    a = torch.arange(1.0, dim + 1)
    table = torch.zeros(g.level_sizes[0], 1)
    table[index, 0] = ((coords.float() - 0.5) / scale * a).sum(-1) + 0.25
    # Instant-NGP's convention puts x = 1 at vertex scale + 0.5, so the last half cell reads one vertex past the
    # grid (aliased, as in tiny-cuda-nn); stay where every corner is a real vertex.
    x = torch.rand(500, dim) * (res - 1.5) / scale
    out = hash_grid_lookup(table, x, g)
    assert torch.allclose(out[:, 0], (x * a).sum(-1) + 0.25, atol=1e-5)


def test_corner_rows_stay_inside_their_level() -> None:
    g = GridGeometry(dim=3, num_levels=6, min_res=4, max_res=200, log2_hashmap_size=10)
    rows, weights = corner_indices_and_weights(torch.rand(2000, 3), g)
    for level in range(g.num_levels):
        r = rows[:, level]
        assert int(r.min()) >= g.offsets[level] and int(r.max()) < g.offsets[level + 1]
    assert torch.allclose(weights.sum(-1), torch.ones(2000, 6), atol=1e-6)


def test_interpolate_then_decode_equals_decode_then_interpolate() -> None:
    torch.manual_seed(0)
    g = GridGeometry(dim=3, num_levels=4, min_res=4, max_res=64, log2_hashmap_size=10)
    grid = ShaciraGrid(g, latent_dim=2, feature_dim=4, implementation="torch").eval()
    with torch.no_grad():
        grid.latents.values.copy_(torch.randint(-5, 6, grid.latents.values.shape).float())
        grid.decoder.bias.normal_()
    x = torch.rand(300, 3)
    fast = grid(x)
    reference = hash_grid_lookup(grid.decoded_table(), x, g)
    assert torch.allclose(fast, reference, atol=1e-5)


def test_rate_gradient_reaches_latents_while_annealing_and_after() -> None:
    g = GridGeometry(dim=2, num_levels=2, min_res=4, max_res=16, log2_hashmap_size=8)
    grid = ShaciraGrid(g, latent_dim=1, feature_dim=1).train()
    with torch.no_grad():
        grid.latents.values.copy_(torch.randn_like(grid.latents.values) * 3)
    for step in (10, 990):  # soft rounding, then straight-through
        grid.set_progress(step, 1000)
        grid.latents.values.grad = None
        grid.rate_bits().backward()
        assert grid.latents.values.grad is not None
        assert float(grid.latents.values.grad.abs().sum()) > 0


def test_eval_cache_follows_parameter_updates() -> None:
    g = GridGeometry(dim=2, num_levels=2, min_res=4, max_res=8, log2_hashmap_size=8)
    grid = ShaciraGrid(g, latent_dim=1, feature_dim=2).eval()
    x = torch.rand(10, 2)
    before = grid(x)
    with torch.no_grad():
        grid.latents.values.add_(3.0)
    assert not torch.equal(grid(x), before)


def test_integer_latents_are_rounded_values() -> None:
    g = GridGeometry(dim=2, num_levels=1, min_res=4, max_res=4, log2_hashmap_size=8)
    grid = ShaciraGrid(g, latent_dim=1, feature_dim=1)
    with torch.no_grad():
        grid.latents.values.copy_(torch.linspace(-2.6, 2.6, grid.latents.values.numel()).view_as(grid.latents.values))
    ints = grid.integer_latents()
    assert ints.dtype == torch.int32
    assert np.array_equal(ints.numpy(), np.round(grid.latents.values.detach().numpy()).astype(np.int32))
    assert math.isclose(float(hash_grid_interpolate(grid.latents.values, torch.rand(3, 2), g).shape[1]), 1)


def test_size_estimate_is_the_renormalised_self_information_and_never_negative() -> None:
    """The contract's estimate equals -sum log2 of each channel's pmf renormalised over [min, max] (an independent
    float64 formulation through ``pmf``), and a channel whose latents are all one integer costs ~0 bits, never < 0
    (float rounding once made it -1e-7 on some machines)."""
    from shacira_nerf.core.entropy_model import FactorizedEntropyModel

    torch.manual_seed(3)
    model = FactorizedEntropyModel(2)
    q = torch.stack([torch.round(torch.randn(5000) * 3), torch.full((5000,), 2.0)], dim=1)
    expected = 0.0
    for d in range(2):
        lo, hi = int(q[:, d].min()), int(q[:, d].max())
        pmf = model.pmf(d, lo, hi)
        pmf = pmf / pmf.sum()
        counts = torch.bincount((q[:, d] - lo).long(), minlength=hi - lo + 1).double().numpy()
        expected += float(-(counts * np.log2(np.maximum(pmf, 1e-300))).sum())
    assert model.estimate_bits(q) == pytest.approx(expected, rel=1e-4)
    constant = torch.full((1000, 2), -4.0)
    assert 0.0 <= model.estimate_bits(constant) < 1e-3


def test_refit_brings_the_bits_of_fixed_integers_to_their_entropy() -> None:
    """The contract's refit (what training and image fits run after their last step) fits the model to final
    integers: their bits end within 2% of the ideal (their own histogram's entropy), from far above it."""
    from shacira_nerf.core.entropy_model import FactorizedEntropyModel

    torch.manual_seed(0)
    q = torch.round(torch.randn(20000, 2) * torch.tensor([1.5, 4.0]))
    ideal = 0.0
    for d in range(2):
        _, counts = torch.unique(q[:, d], return_counts=True)
        p = counts.double() / counts.sum()
        ideal += float(-(counts * torch.log2(p)).sum())
    model = FactorizedEntropyModel(2)
    before = float(model.bits(q))
    model.refit(q, steps=1500)
    after = float(model.bits(q))
    assert before > 1.3 * ideal
    assert ideal <= after * (1 + 1e-6) and after < 1.02 * ideal
