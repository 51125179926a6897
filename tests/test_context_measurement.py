"""The context measurement (benchmarks/context_models.py) is only as good as its row indexing and its context
counts: it re-implements the grid's vertex -> row map torch-free, so these tests hold it to core's lookup, and its
vectorised coarse and causal counts to brute-force loops on small grids."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shacira_nerf.codec import empirical_table, table_bits
from shacira_nerf.core.hash_grid import GridGeometry, corner_indices_and_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import context_models as cm  # noqa: E402

GEOMETRY = GridGeometry(3, 4, 4, 24, 9)  # levels 0-1 dense, 2-3 hashed (512 rows)


def test_geometry_has_dense_and_hashed_levels() -> None:
    assert GEOMETRY.dense[:2] == [True, True] and GEOMETRY.dense[2:] == [False, False]


@pytest.mark.parametrize("level", range(GEOMETRY.num_levels))
def test_vertex_rows_are_the_rows_core_looks_up(level: int) -> None:
    """A point a quarter cell past vertex v has v as its first corner: its row is the script's ``vertex_rows``."""
    res, size = GEOMETRY.resolutions[level], GEOMETRY.level_sizes[level]
    rng = np.random.default_rng(level)
    v = rng.integers(0, res - 1, size=(500, 3))
    x = torch.tensor((v + 0.25 - 0.5) / GEOMETRY.scales[level], dtype=torch.float32)
    rows, _ = corner_indices_and_weights(x, GEOMETRY)
    expected = rows[:, level, 0].numpy() - GEOMETRY.offsets[level]
    got = cm.vertex_rows([v[:, 0], v[:, 1], v[:, 2]], res, size, GEOMETRY.dense[level])
    assert np.array_equal(got, expected)


def _brute_coarse(used_coarse: np.ndarray, level: int) -> np.ndarray:
    R, r = GEOMETRY.resolutions[level - 1], GEOMETRY.resolutions[level]
    sizes, dense = GEOMETRY.level_sizes, GEOMETRY.dense
    counts = np.zeros(sizes[level], dtype=np.int64)
    for vx, vy, vz in itertools.product(range(r), repeat=3):
        cell = [min(c * (R - 1) // (r - 1), R - 1) for c in (vx, vy, vz)]
        k = 0
        for dx, dy, dz in itertools.product((0, 1), repeat=3):
            corner = [cell[0] + dx, cell[1] + dy, cell[2] + dz]
            if max(corner) < R:
                row = cm.vertex_rows([np.array([c]) for c in corner], R, sizes[level - 1], dense[level - 1])[0]
                k += int(used_coarse[row])
        counts[cm.vertex_rows([np.array([c]) for c in (vx, vy, vz)], r, sizes[level], dense[level])[0]] += k
    return counts


@pytest.mark.parametrize("level", [1, 2])
def test_coarse_counts_match_a_loop_over_every_vertex(level: int) -> None:
    """Dense -> dense (level 1) and dense -> hashed (level 2, several positions a row)."""
    rng = np.random.default_rng(level)
    used = rng.random(GEOMETRY.level_sizes[level - 1]) < 0.3
    coarse = (GEOMETRY.resolutions[level - 1], GEOMETRY.level_sizes[level - 1], GEOMETRY.dense[level - 1])
    fine = (GEOMETRY.resolutions[level], GEOMETRY.level_sizes[level], GEOMETRY.dense[level])
    got = cm.coarse_counts(used, coarse, fine, chunk=100)
    assert got.sum() > 0 and np.array_equal(got, _brute_coarse(used, level))


def test_causal_counts_match_a_loop() -> None:
    res = GEOMETRY.resolutions[1]
    rng = np.random.default_rng(3)
    used = rng.random(GEOMETRY.level_sizes[1]) < 0.4
    got = cm.causal_counts(used, res)
    for x, y, z in itertools.product(range(res), repeat=3):
        row = x + y * res + z * res * res
        expected = sum(int(used[row - step]) for c, step in ((x, 1), (y, res), (z, res * res)) if c > 0)
        assert got[row] == expected, (x, y, z)
    assert not got[res**3 :].any()


def test_cost_codes_each_context_with_its_own_quantized_table() -> None:
    rng = np.random.default_rng(4)
    values = rng.integers(-3, 4, size=1000)
    contexts = (values > 0).astype(np.int64)
    cost = cm.Cost()
    cost.add(values, contexts)
    expected = sum(table_bits(values[contexts == c], empirical_table(values[contexts == c])) for c in (0, 1))
    assert cost.bits == pytest.approx(expected) and sorted(cost.tables) == [3, 4]
    single = cm.Cost()
    single.add(values)
    assert single.bits > cost.bits  # the context separates the signs: fewer bits than one table
