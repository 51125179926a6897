"""Each entropy model behind the contract, end to end on tiny grids: likelihood, PMF, estimate, refit, the coded
bitstream and the scene file (the fused Triton kernel's per-level layout is tested in test_lookup.py)."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

from shacira_nerf import file_layer
from shacira_nerf.bitstream import decode_grid, encode_grid, stream_layout
from shacira_nerf.codec import ContainerError
from shacira_nerf.core.entropy_model import (
    ENTROPY_MODELS,
    LIKELIHOOD_BOUND,
    FactorizedEntropyModel,
    table_layout,
)
from shacira_nerf.core.grid import ShaciraGrid
from shacira_nerf.core.hash_grid import GridGeometry
from shacira_nerf.core.per_level_entropy import PerLevelEntropyModel
from shacira_nerf.core.rate import bits_from_likelihoods

GEOMETRY = GridGeometry(3, 4, 4, 32, 10)  # levels of 64, 512, 1024, 1024 rows


@functools.lru_cache(maxsize=None)
def _grid(model: str, refit_steps: int = 300) -> ShaciraGrid:
    """A grid whose levels hold integers of different spreads (what per-level tables are for), model refit (made
    once per arguments: the tests only read it)."""
    torch.manual_seed(0)
    grid = ShaciraGrid(GEOMETRY, entropy_model=model, implementation="torch")
    offsets = grid.latents.offsets
    with torch.no_grad():
        for level in range(GEOMETRY.num_levels):
            rows = offsets[level + 1] - offsets[level]
            spread = torch.tensor([3.0 - 0.7 * level, 0.5 + level])
            grid.latents.values[offsets[level] : offsets[level + 1]] = torch.round(torch.randn(rows, 2) * spread)
    grid.entropy_model.refit(torch.round(grid.latents.values.detach()), refit_steps)
    return grid


def test_the_reader_knows_the_models_core_builds() -> None:
    assert file_layer.ENTROPY_MODELS == ENTROPY_MODELS
    for name in ENTROPY_MODELS:
        layout = table_layout(name, 5, 3)
        assert len({t for row in layout for t in row}) == file_layer.entropy_tables(name, 5, 3)


def test_per_level_likelihood_is_each_levels_own_factorized_model() -> None:
    """The padded one-call evaluation equals separate factorized models, one per level, on that level's rows."""
    torch.manual_seed(2)
    offsets = [0, 3, 40, 41, 90]
    model = PerLevelEntropyModel(2, offsets)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    x = torch.randn(90, 2) * 3
    expected = []
    for level in range(4):
        single = FactorizedEntropyModel(2)
        for mine, theirs in zip(single.parameters(), model.cdfs.parameters()):
            mine.data.copy_(theirs.data[2 * level : 2 * level + 2])
        expected.append(single.likelihood(x[offsets[level] : offsets[level + 1]]))
    torch.testing.assert_close(model.likelihood(x), torch.cat(expected), rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="90 rows"):
        model.likelihood(x[:50])
    x.requires_grad_(True)
    model.bits(x).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


@pytest.mark.parametrize("model", ENTROPY_MODELS)
def test_pmf_of_every_table_sums_to_one(model: str) -> None:
    grid = _grid(model)
    em = grid.entropy_model
    assert em.name == model and em.num_tables == file_layer.entropy_tables(model, GEOMETRY.num_levels, 2)
    for level in range(GEOMETRY.num_levels):
        assert [em.table_index(level, d) for d in range(2)] == table_layout(model, GEOMETRY.num_levels, 2)[level]
    for t in range(em.num_tables):
        pmf = em.pmf(t, -3000, 3000)
        assert abs(pmf.sum() - 1.0) < 1e-4 and (pmf > 0).all(), t


def test_per_level_estimate_is_the_renormalised_self_information() -> None:
    """The vectorised estimate equals -sum log2 of each (level, channel) table's pmf renormalised over [min, max]."""
    grid = _grid("per_level", refit_steps=0)
    q = torch.round(grid.latents.values.detach())
    em, offsets = grid.entropy_model, grid.latents.offsets
    expected = 0.0
    for level in range(GEOMETRY.num_levels):
        for d in range(2):
            column = q[offsets[level] : offsets[level + 1], d]
            lo, hi = int(column.min()), int(column.max())
            pmf = em.pmf(em.table_index(level, d), lo, hi)
            pmf = pmf / pmf.sum()
            counts = torch.bincount((column - lo).long(), minlength=hi - lo + 1).double().numpy()
            expected += float(-(counts * np.log2(np.maximum(pmf, 1e-300))).sum())
    assert em.estimate_bits(q) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("whole_table", [False, True])
@pytest.mark.parametrize("model", ENTROPY_MODELS)
def test_round_trip_is_bit_exact_and_the_estimate_is_within_two_percent(model: str, whole_table: bool) -> None:
    grid = _grid(model)
    header, sections = encode_grid(grid, "g", whole_table=whole_table)
    sections = dict(sections)
    assert sum("/table/" in name for name in sections) == grid.entropy_model.num_tables
    decoded = decode_grid(header, sections, "g", GEOMETRY.level_sizes)
    assert decoded.dtype == np.int32 and np.array_equal(decoded, grid.integer_latents().numpy())
    coded = sum(len(v) for k, v in sections.items() if "/latents/" in k)
    estimate = grid.entropy_model.estimate_bits(torch.round(grid.latents.values.detach())) / 8
    assert abs(coded - estimate) <= 0.02 * coded, (coded, estimate)
    assert header.get("entropy_model", "factorized") == model


def test_per_level_tables_code_levels_of_different_spread_smaller() -> None:
    coded = {}
    for model in ENTROPY_MODELS:
        _, sections = encode_grid(_grid(model), "g")
        coded[model] = sum(len(v) for k, v in sections if "/latents/" in k)
    assert coded["per_level"] < 0.98 * coded["factorized"], coded


def test_old_entries_read_as_factorized_and_bad_ones_are_refused() -> None:
    header, pairs = encode_grid(_grid("per_level", refit_steps=0), "g")
    sections = dict(pairs)
    old = {k: v for k, v in header.items() if k not in ("entropy_model", "num_tables")}
    entry = file_layer.read_grid_entry("g", old)
    assert entry.entropy_model == "factorized" and entry.num_tables == 2
    assert file_layer.read_grid_entry("g", header).num_tables == GEOMETRY.num_levels * 2
    cases = [
        ({**header, "entropy_model": "context"}, "names an unknown entropy model"),
        ({**header, "entropy_model": 3}, "names an unknown entropy model 3"),
        ({**header, "num_tables": 9}, "claims 9 coding tables; a per_level grid of 4 levels x 2 dimensions has 8"),
        ({**header, "num_tables": 10**9}, r"num_tables must be an integer in \[1, 4096\]"),
    ]
    for bad, words in cases:
        with pytest.raises(ContainerError, match=words):
            file_layer.read_grid_entry("g", bad)
    # The per-level stream layout over factorized tables (the entry lies about its model): a missing table section
    lying = {k: v for k, v in header.items() if k != "num_tables"}
    del sections["g/table/7"]
    with pytest.raises(ContainerError, match="missing section 'g/table/7'"):
        decode_grid(lying, sections, "g", GEOMETRY.level_sizes)


def test_stream_layout_of_old_files_is_unchanged() -> None:
    """Factorized layouts are the ones files were written with before the per-level model existed."""
    sizes = [5, 7]
    assert stream_layout("factorized", sizes, 2, False) == [("0", [(0, 5, 0, 0), (0, 5, 1, 1)]),
                                                            ("1", [(5, 7, 0, 0), (5, 7, 1, 1)])]  # fmt: skip
    assert stream_layout("factorized", sizes, 2, True) == [("all", [(0, 12, 0, 0), (0, 12, 1, 1)])]
    assert stream_layout("per_level", sizes, 2, True) == [("all", [(0, 5, 0, 0), (0, 5, 1, 1), (5, 7, 0, 2),
                                                                   (5, 7, 1, 3)])]  # fmt: skip


def test_refit_of_the_per_level_model_reaches_each_levels_entropy() -> None:
    grid = _grid("per_level")
    q = torch.round(grid.latents.values.detach())
    offsets = grid.latents.offsets
    ideal = 0.0
    for level in range(GEOMETRY.num_levels):
        for d in range(2):
            _, counts = torch.unique(q[offsets[level] : offsets[level + 1], d], return_counts=True)
            p = counts.double() / counts.sum()
            ideal += float(-(counts * torch.log2(p)).sum())
    with torch.no_grad():
        bits = float(bits_from_likelihoods(grid.entropy_model.likelihood(q)))
    assert ideal <= bits <= 1.03 * ideal, (bits, ideal)


def test_scene_file_with_per_level_model_round_trips_and_says_so() -> None:
    from nerfstudio.data.scene_box import SceneBox

    from shacira_nerf.nerf.model import ShaciraConfigError, ShaciraModelConfig
    from shacira_nerf.nerf.scene_file import decode_scene, encode_scene
    from shacira_nerf.report import file_report, format_report

    proposal = {"hidden_dim": 8, "log2_hashmap_size": 8, "num_levels": 3, "max_res": 32, "use_linear": False}
    config = ShaciraModelConfig(num_levels=4, log2_hashmap_size=10, max_res=64, hidden_dim=16, hidden_dim_color=16,
                                proposal_net_args_list=[dict(proposal), dict(proposal)], implementation="torch",
                                entropy_model="per_level")  # fmt: skip
    config.camera_optimizer.mode = "off"
    torch.manual_seed(0)
    model = config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=2, metadata={})
    with torch.no_grad():
        for grid in model.grids.values():
            assert grid.entropy_model.name == "per_level"
            grid.latents.values.copy_(torch.round(torch.randn_like(grid.latents.values) * 2))
    data = encode_scene(model)
    decoded = decode_scene(data).model
    for name, grid in decoded.grids.items():
        assert grid.entropy_model.name == "per_level"
        assert torch.equal(grid.latents.values, model.grids[name].latents.values), name
    report = file_report(data)
    assert set(report["entropy_models"].values()) == {"per_level"}
    assert "entropy model:   per_level (field, proposal_0, proposal_1)" in format_report("x.shac", report)
    with pytest.raises(ShaciraConfigError, match="entropy_model must be one of factorized, per_level"):
        ShaciraModelConfig(entropy_model="context")


def _float64_bits_and_grads(model, x: torch.Tensor):  # noqa: ANN001 - a FactorizedEntropyModel
    """The rate and its gradients in float64 through the reference formula (the yardstick for both float32 paths)."""
    reference = copy.deepcopy(model).double()
    xd = x.detach().double().requires_grad_(True)
    v = xd.t().unsqueeze(1)  # ``likelihood``'s formula, which itself computes in float32
    lower, upper = reference.logits_cdf(v - 0.5), reference.logits_cdf(v + 0.5)
    sign = -torch.sign(lower + upper).detach()
    p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).clamp_min(LIKELIHOOD_BOUND)
    bits = -torch.log2(p).sum()
    bits.backward()
    return float(bits), xd.grad, [p.grad for p in reference.parameters()]


@pytest.mark.parametrize("values", ["integers", "non-integers"])
def test_the_rate_of_integer_latents_from_a_table_of_integers_is_the_per_latent_rate(values: str) -> None:
    # On a CPU, integer-valued latents (straight-through rounding) take their bits from the model evaluated once per
    # integer in use; the rate and every gradient must be the per-latent formula's (here checked in float64).
    torch.manual_seed(0)
    model = FactorizedEntropyModel(channels=2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    raw = torch.randn(60_000, 2) * 2
    raw[:50] *= 10  # a few far-out values
    x = raw.clone().requires_grad_(True)
    q = x + (torch.round(x) - x).detach() if values == "integers" else x
    bits = model.bits(q)
    bits.backward()
    expected_bits, expected_x, expected_params = _float64_bits_and_grads(model, q)
    assert float(bits) == pytest.approx(expected_bits, rel=1e-6)
    torch.testing.assert_close(x.grad.double(), expected_x, rtol=1e-4, atol=1e-6)
    for p, expected in zip(model.parameters(), expected_params):
        scale = float(expected.abs().max())
        torch.testing.assert_close(p.grad.double(), expected, rtol=1e-3, atol=1e-4 * scale)
    with torch.no_grad():  # and without autograd (e.g. a size estimate's caller)
        assert float(model.bits(q.detach())) == pytest.approx(expected_bits, rel=1e-6)
