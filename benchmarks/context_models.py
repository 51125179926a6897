"""Which context would pay for a context entropy model (issue 15): code lengths of a scene file's integers under
candidate contexts, measured before building one.

Reads a `.shac` scene file (torch-free: the integers are decoded with the file's own tables) and, per grid and level,
codes every latent with static tables fitted to its own histogram, one quantized 16-bit table per (level, channel,
context) exactly as the coder would build it (``codec.empirical_table``; the Shannon bits under the *quantized*
table, so the 16-bit rounding is counted), plus what storing those tables costs. Candidates:

- ``factorized``: one table per channel for the whole grid (the appendix's model, fitted to these integers);
- ``per_level``: one table per (level, channel) (the second model);
- ``a_bucket``: per level, channel 1 given channel 0 of the same row, bucketed as 0 / -1 / +1 / <= -2 / >= 2 (about
  the level's mode); ``a_exact``: the same with channel 0's exact value in [-3, 3] (beyond: one context a side);
- ``d_flag``: per level, a row flag "every channel at the level's mode" coded first (one 2-symbol table), then only
  the other rows: channel 0, and channel 1 given channel 0's bucket (as ``a_bucket``); each level's mode is side
  information, a byte per channel (``MODE_BITS``);
- ``c_coarse``: ``d_flag`` with the flag's table chosen by the coarser level (decoded before): for each position of
  the level's grid, the number of flagged-off ("used") rows among the 8 coarse vertices around it, summed over the
  row's positions and bucketed 0, 1, 2-3, 4-7, 8-15, >= 16. A dense row has one position; a hashed row has all the
  grid vertices that hash to it (res^3 / rows of them), which the decoder can enumerate only while res^3 is small
  (``--max-positions``, default 2^25): on finer hashed levels (and on level 0, which has no coarser level) the flag
  has no context. Integer arithmetic only: coarse vertex = floor(v x (R - 1) / (r - 1)) per axis;
- ``c_coarse_values``: ``c_coarse`` with channel 0 of the used rows also conditioned on the same context;
- ``b_causal``: ``d_flag`` with the flag's table chosen, on a dense level, by how many of the row's causal raster
  neighbours (x-1, y-1, z-1 in the level's own grid, index x + y r + z r^2) are used, 0..3, and on a hashed level by
  whether row r - 1 is used (the x prime is 1, so rows r and r +- 1 are often x-neighbours); ``b_causal_coarse``:
  that and the coarse context together. These need the flag decoded one row at a time (each flag's context depends
  on flags of the same stream), which the batched coder cannot do; they bound what a sequential or two-pass scheme
  could get.
- per level, the flag's bits alone under no context, the coarse one, the previous row's flag, and the flag of the
  row of the same index one level coarser (``flag_bits*`` in the JSON: where the flag's bits can and cannot go);
- ``best_batched``: per level the cheapest batched candidate, payload and tables (a hybrid model's bound, plus a
  byte per level to say which); ``joint_bound``: per level the joint entropy of a row's channels under its own
  histogram, no tables: no within-row context can code below it.

Table cost (``today``): what a file stores per table now, 13 bytes of table head + 4 bytes a symbol + the section
framing (name, length, CRC) measured on the file; ``compact``: 2 bytes a symbol + 2, as if a model's tables shared
one section with 16-bit frequencies (not a format this repository has). Each level's streams share one coder, so a
split into contexts adds no coder flush. The real coded bytes of the fitted factorized and per-level models on the
same integers come from ``results/entropy_models_fitted_lego_h200.json`` (``entropy_models.py --fit-steps``), read
when present.

    python benchmarks/context_models.py tests/fixtures/lego_h200_lambda0.1.shac --json results/context_models_lego_h200.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, command_line, machine, today  # noqa: E402

from shacira_nerf.codec import describe_sections, empirical_table, table_bits  # noqa: E402

TABLE_HEAD_BYTES = 13
"""``pack_table``'s head: offset i64, precision u8, symbol count u32."""
COARSE_BUCKETS = 2 ** np.arange(13)
"""Upper edges (exclusive) of the coarse-context buckets of used-coarse-vertex counts: 0, 1, 2-3, 4-7, ..., >= 4096
(log2 buckets, so that rows with many positions, whose counts are large, still fall into several)."""
BATCHED = ("per_level", "a_bucket", "a_exact", "d_flag", "c_coarse", "c_coarse_values")
"""Candidates whose contexts come from streams decoded before (other channels, the coarser level): each (level,
channel) stream splits into one sub-stream per context, coded in one batched call as today."""
SEQUENTIAL = ("b_causal", "b_causal_coarse")
"""Candidates whose flag context depends on earlier flags of the same stream (one symbol at a time to decode)."""
CANDIDATES = BATCHED + SEQUENTIAL
PRIMES = (1, 2654435761, 805459861)
"""``core.hash_grid.PRIMES`` for three axes (copied: this script stays torch-free)."""


class Cost:
    """Payload bits and stored tables (their symbol counts) of one way of coding."""

    def __init__(self) -> None:
        self.bits = 0.0
        self.tables: List[int] = []

    def add(self, values: np.ndarray, contexts: Optional[np.ndarray] = None) -> None:
        """Code ``values`` with one quantized empirical table per distinct context (a single table without)."""
        if values.size == 0:
            return
        if contexts is None:
            contexts = np.zeros(values.shape[0], dtype=np.int64)
        order = np.argsort(contexts, kind="stable")
        values, contexts = values[order], contexts[order]
        starts = np.flatnonzero(np.r_[True, contexts[1:] != contexts[:-1]])
        for part in np.split(values, starts[1:]):
            table = empirical_table(part)
            self.bits += table_bits(part, table)
            self.tables.append(table.num_symbols)

    def table_bytes(self, framing: float, compact: bool) -> float:
        if compact:
            return sum(2 * k + 2 for k in self.tables)
        return sum(TABLE_HEAD_BYTES + 4 * k + framing for k in self.tables)


def bucket(delta: np.ndarray) -> np.ndarray:
    """0 / -1 / +1 / <= -2 / >= 2 as contexts 0..4."""
    return np.select([delta == 0, delta == -1, delta == 1, delta <= -2], [0, 1, 2, 3], default=4)


def level_modes(block: np.ndarray) -> np.ndarray:
    """The most frequent integer of each channel of a level."""
    modes = []
    for d in range(block.shape[1]):
        values, counts = np.unique(block[:, d], return_counts=True)
        modes.append(int(values[np.argmax(counts)]))
    return np.array(modes)


MODE_BITS = 8
"""Side information of the flag candidates: each level's mode, per channel (the decoder must know what "at the mode"
means), stored as a byte."""


def code_flagged(
    cost: Cost, block: np.ndarray, used: np.ndarray, mode: np.ndarray, flag_ctx=None, ctx0=None  # noqa: ANN001
) -> None:
    """A level coded as its mode (side information), the used-row flag (given ``flag_ctx`` when set), then the
    used rows only: channel 0 (given ``ctx0`` when set), then each further channel given channel 0's bucket."""
    cost.bits += MODE_BITS * block.shape[1]
    cost.add(used.astype(np.int64), flag_ctx)
    rows = block[used]
    cost.add(rows[:, 0], None if ctx0 is None else ctx0[used])
    for d in range(1, block.shape[1]):
        cost.add(rows[:, d], bucket(rows[:, 0] - mode[0]))


def flag_bits(used: np.ndarray, contexts: Optional[np.ndarray]) -> float:
    """Bits of a level's used-row flags alone, one table per context (``flag_bits_same_index``: the row of the same
    index one level coarser, for two hashed levels of one size, a context with no geometry behind it)."""
    cost = Cost()
    cost.add(used.astype(np.int64), contexts)
    return cost.bits


def vertex_rows(coords: List[np.ndarray], res: int, size: int, dense: bool) -> np.ndarray:
    """Row within its level of each vertex (x, y, z integer arrays), as ``core.hash_grid`` indexes it."""
    if dense:
        index = coords[0] + coords[1] * res + coords[2] * res * res
    else:
        index = np.zeros_like(coords[0])
        for c, p in zip(coords, PRIMES):
            index = index ^ (c * p)
    return np.remainder(index, size)


def coarse_counts(
    used_coarse: np.ndarray, coarse: Tuple[int, int, bool], fine: Tuple[int, int, bool], chunk: int = 1 << 22
) -> np.ndarray:
    """Per row of the fine level: used coarse vertices among the 8 around each of its positions, summed.

    ``used_coarse``: flag per row of the coarser level; ``coarse``/``fine``: (resolution, rows, dense). The coarse
    grid's used flags go into a dense [R, R, R] array once, summed over each 2x2x2 cell; each fine vertex then reads
    its cell (coarse vertex floor(v (R - 1) / (r - 1)) per axis, clipped to the last cell).
    """
    R, coarse_size, coarse_dense = coarse
    r, size, dense = fine
    axis = np.arange(R, dtype=np.int64)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    occupied = used_coarse[vertex_rows([x.ravel(), y.ravel(), z.ravel()], R, coarse_size, coarse_dense)]
    occupied = occupied.reshape(R, R, R).astype(np.int64)
    padded = np.pad(occupied, ((0, 1), (0, 1), (0, 1)))
    cells = sum(padded[a : a + R, b : b + R, c : c + R] for a in (0, 1) for b in (0, 1) for c in (0, 1))
    cell_of = np.minimum(np.arange(r, dtype=np.int64) * (R - 1) // max(r - 1, 1), R - 1)
    counts = np.zeros(size, dtype=np.int64)
    total = r**3
    for start in range(0, total, chunk):
        v = np.arange(start, min(start + chunk, total), dtype=np.int64)
        vx, vy, vz = v % r, (v // r) % r, v // (r * r)
        k = cells[cell_of[vz], cell_of[vy], cell_of[vx]]
        counts += np.bincount(vertex_rows([vx, vy, vz], r, size, dense), weights=k, minlength=size).astype(np.int64)
    return counts


def causal_counts(used: np.ndarray, res: int) -> np.ndarray:
    """Per row of a dense level: how many of its x-1, y-1, z-1 neighbours are used (0 outside the grid)."""
    n = res**3
    grid = used[:n].reshape(res, res, res).astype(np.int64)  # [z, y, x]
    count = np.zeros_like(grid)
    count[:, :, 1:] += grid[:, :, :-1]
    count[:, 1:, :] += grid[:, :-1, :]
    count[1:, :, :] += grid[:-1, :, :]
    out = np.zeros(used.shape[0], dtype=np.int64)
    out[:n] = count.ravel()
    return out


def measure_grid(
    latents: np.ndarray, geometry, max_positions: int, framing: float  # noqa: ANN001 - a GridGeometry
) -> Tuple[List[dict], Dict[str, Cost]]:
    """Every candidate's cost per level, and the grid's totals (``factorized`` over the whole grid)."""
    offsets, res, sizes, dense = geometry.offsets, geometry.resolutions, geometry.level_sizes, geometry.dense
    totals = {name: Cost() for name in ("factorized", *CANDIDATES, "best_batched", "joint_bound")}
    for d in range(latents.shape[1]):
        totals["factorized"].add(latents[:, d])
    levels, previous_used = [], None
    for level in range(geometry.num_levels):
        block = latents[offsets[level] : offsets[level + 1]]
        mode = level_modes(block)
        used = ~(block == mode).all(axis=1)
        costs = {name: Cost() for name in CANDIDATES}
        for d in range(block.shape[1]):
            costs["per_level"].add(block[:, d])
        costs["a_bucket"].add(block[:, 0])
        costs["a_exact"].add(block[:, 0])
        for d in range(1, block.shape[1]):
            costs["a_bucket"].add(block[:, d], bucket(block[:, 0] - mode[0]))
            costs["a_exact"].add(block[:, d], np.clip(block[:, 0] - mode[0], -4, 4))
        code_flagged(costs["d_flag"], block, used, mode)
        coarse_ctx, context_seconds = None, 0.0
        if previous_used is not None and res[level] ** 3 <= max_positions:
            start = time.perf_counter()
            counts = coarse_counts(previous_used, (res[level - 1], sizes[level - 1], dense[level - 1]),
                                   (res[level], sizes[level], dense[level]))  # fmt: skip
            coarse_ctx = np.searchsorted(COARSE_BUCKETS, counts, side="right")
            context_seconds = time.perf_counter() - start
        same_index = None
        if previous_used is not None and previous_used.shape == used.shape:
            same_index = previous_used.astype(np.int64)
        flags = {key: flag_bits(used, ctx) for key, ctx in (("flag_bits", None), ("flag_bits_coarse", coarse_ctx),
                 ("flag_bits_previous_row", np.r_[0, used[:-1]].astype(np.int64)),
                 ("flag_bits_same_index", same_index))}  # fmt: skip
        if same_index is None:
            flags["flag_bits_same_index"] = None  # no level of the same size before it
        code_flagged(costs["c_coarse"], block, used, mode, coarse_ctx)
        code_flagged(costs["c_coarse_values"], block, used, mode, coarse_ctx, coarse_ctx)
        causal = causal_counts(used, res[level]) if dense[level] else np.r_[0, used[:-1]].astype(np.int64)
        code_flagged(costs["b_causal"], block, used, mode, causal)
        code_flagged(costs["b_causal_coarse"], block, used, mode, causal * 16 + (0 if coarse_ctx is None else coarse_ctx))
        best = min(BATCHED, key=lambda n: costs[n].bits / 8 + costs[n].table_bytes(framing, compact=False))
        costs["best_batched"] = Cost()
        costs["best_batched"].bits = costs[best].bits + 8
        costs["best_batched"].tables = list(costs[best].tables)
        _, pair_counts = np.unique(block, axis=0, return_counts=True)
        costs["joint_bound"] = Cost()
        costs["joint_bound"].bits = float(-(pair_counts * np.log2(pair_counts / block.shape[0])).sum())
        levels.append({"best_batched": best,
            "level": level, "rows": int(block.shape[0]), "dense": bool(dense[level]), "resolution": res[level],
            "positions_per_row": res[level] ** 3 / sizes[level], "mode": mode.tolist(),
            "used_fraction": float(used.mean()), "coarse_context": coarse_ctx is not None,
            "coarse_context_seconds": context_seconds, **flags,
            "bits": {name: c.bits for name, c in costs.items()},
        })  # fmt: skip
        for name, c in costs.items():
            totals[name].bits += c.bits
            totals[name].tables += c.tables
        previous_used = used
    return levels, totals


def fitted_reference(path: Path) -> Optional[dict]:
    """Real coded bytes of the fitted factorized and per-level models on the same file (entropy_models.py)."""
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return {"source": str(path.relative_to(RESULTS.parent)), "command": data.get("command"),
            "models": {r["entropy_model"]: {k: r[k] for k in ("file_bytes", "latent_bytes", "table_bytes",
                                                             "header_bytes")} for r in data["fitted"]}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--max-positions", type=int, default=2**25,
                        help="largest res^3 whose vertices are enumerated for the coarse context")  # fmt: skip
    args = parser.parse_args()

    from shacira_nerf.bitstream import decode_grid
    from shacira_nerf.core.hash_grid import GridGeometry
    from shacira_nerf.file_layer import SCENE_KIND, read_file

    env, data = read_file(args.scene, SCENE_KIND)
    described = describe_sections(data)
    tables = [s for s in described if "/table/" in s["name"]]
    framing = float(np.mean([s["framed_bytes"] - s["payload_bytes"] for s in tables]))
    coded = sum(s["payload_bytes"] for s in described if "/latents/" in s["name"])
    grids, totals = [], {}
    for name, entry in env.grids.items():
        geometry = GridGeometry(**entry.geometry)
        latents = decode_grid(entry, env.sections, name, geometry.level_sizes).astype(np.int64)
        levels, grid_totals = measure_grid(latents, geometry, args.max_positions, framing)
        grids.append({"grid": name, "levels": levels, "totals": summarize(grid_totals, framing)})
        for key, cost in grid_totals.items():
            totals.setdefault(key, Cost())
            totals[key].bits += cost.bits
            totals[key].tables += cost.tables
    summary = summarize(totals, framing)
    levels = [lv for g in grids for lv in g["levels"]]
    stuck = [lv for lv in levels if lv["flag_bits_coarse"] > 0.99 * lv["flag_bits"]]
    flags = {"flag_bytes": sum(lv["flag_bits"] for lv in levels) / 8,
             "flag_bytes_coarse": sum(lv["flag_bits_coarse"] for lv in levels) / 8,
             "flag_bytes_without_useful_context": sum(lv["flag_bits"] for lv in stuck) / 8,
             "levels_without_useful_context": len(stuck), "levels": len(levels)}  # fmt: skip
    base = summary["per_level"]["bytes_today"]
    factorized = summary["factorized"]["bytes_today"]
    for name, s in summary.items():
        s["vs_per_level_bytes"] = s["bytes_today"] - base
        s["vs_factorized_of_latents"] = (s["bytes_today"] - factorized) / factorized
        s["vs_factorized_of_file"] = (s["bytes_today"] - factorized) / len(data)
    result = {"date": today(), "machine": machine(), "command": command_line(), "file": args.scene.name,
              "file_bytes": len(data), "file_latent_payload_bytes": coded, "table_framing_bytes": framing,
              "max_positions": args.max_positions, "total": summary, "flags": flags, "grids": grids,
              "fitted_models": fitted_reference(RESULTS / "entropy_models_fitted_lego_h200.json")}  # fmt: skip
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


def print_report(result: dict) -> None:
    """The totals of every candidate and the flag's share, one line each."""
    file_bytes, flags = result["file_bytes"], result["flags"]
    print(f"file {file_bytes:,} B, coded latents {result['file_latent_payload_bytes']:,} B; static tables fitted to "
          "the integers (payload + tables as stored today | compact):")  # fmt: skip
    for name, s in result["total"].items():
        print(f"{name:>16}: {s['payload_bytes']:>11,.0f} + {s['table_bytes_today']:>7,.0f} = {s['bytes_today']:>11,.0f}"
              f" | {s['bytes_compact']:>11,.0f}  ({len(s['tables'])} tables)  vs factorized "
              f"{100 * s['vs_factorized_of_latents']:+6.2f}% of latents, {100 * s['vs_factorized_of_file']:+6.2f}% "
              f"of the file; vs per_level {100 * s['vs_per_level_bytes'] / file_bytes:+6.2f}% of the file")  # fmt: skip
    print(f"the used-row flag alone: {flags['flag_bytes']:,.0f} B ({flags['flag_bytes_coarse']:,.0f} with the coarse "
          f"context); {flags['flag_bytes_without_useful_context']:,.0f} B of it on the "
          f"{flags['levels_without_useful_context']} of {flags['levels']} levels where the coarse context saves < 1% or "
          f"cannot be enumerated ({100 * flags['flag_bytes_without_useful_context'] / file_bytes:.1f}% of the file)")  # fmt: skip


def summarize(costs: Dict[str, Cost], framing: float) -> Dict[str, dict]:
    return {name: {"payload_bytes": c.bits / 8, "tables": c.tables,
                   "table_bytes_today": c.table_bytes(framing, compact=False),
                   "table_bytes_compact": c.table_bytes(framing, compact=True),
                   "bytes_today": c.bits / 8 + c.table_bytes(framing, compact=False),
                   "bytes_compact": c.bits / 8 + c.table_bytes(framing, compact=True)} for name, c in costs.items()}  # fmt: skip


if __name__ == "__main__":
    main()
