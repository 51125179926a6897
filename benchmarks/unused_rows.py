"""How many rows of a scene file's grids hold nothing, and what they cost: a stand-in for "rows no sample touches".

Reads a `.shac` scene file (no training, no dataset): decodes each grid's integer latents from the file and reads
its stored integer tables. Per level it counts
- rows whose every latent is the most probable integer of its table (the table's mode: what the entropy model
  spends the fewest bits on, so what an untouched row drifts to under the rate term), and
- rows whose latents are all zero,
and what those rows cost in the file: the Shannon bits of their latents under the file's own tables (a coded row of
modes costs the same bits wherever it stands). The latents of a row no ray ever reaches get no gradient but the
rate's, so they settle at the mode; such rows are a subset of the mode rows counted here (a touched row may also
hold the mode), so the count is an upper bound on untouched rows and their cost an upper bound on what pruning them
could save (issue 15). CPU only.

    python benchmarks/unused_rows.py tests/fixtures/lego_h200_lambda0.1.shac [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine, today  # noqa: E402


def row_costs(block: np.ndarray, tables: list) -> np.ndarray:
    """Bits of each row of ``block`` [rows, dims] under its dimensions' tables."""
    bits = np.zeros(block.shape[0])
    for d, table in enumerate(tables):
        cost = table.precision - np.log2(table.freqs.astype(np.float64))
        bits += cost[block[:, d] - table.offset]
    return bits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from shacira_nerf.bitstream import decode_grid, read_tables, stream_layout
    from shacira_nerf.core.hash_grid import GridGeometry
    from shacira_nerf.file_layer import SCENE_KIND, read_file

    env, data = read_file(args.scene, SCENE_KIND)
    grids = []
    for name, entry in env.grids.items():
        geometry = GridGeometry(**entry.geometry)
        sizes = geometry.level_sizes
        latents = decode_grid(entry, env.sections, name, sizes).astype(np.int64)
        tables = read_tables(entry, env.sections, name)
        layout = stream_layout(entry.entropy_model, sizes, entry.latent_dim, whole_table=False)
        levels = []
        for level, (_, streams) in enumerate(layout):
            first, rows = streams[0][0], streams[0][1]
            block = latents[first : first + rows]
            level_tables = [tables[t] for _, _, _, t in streams]
            modes = np.array([t.offset + int(np.argmax(t.freqs)) for t in level_tables])
            bits = row_costs(block, level_tables)
            at_mode = (block == modes).all(axis=1)
            zero = (block == 0).all(axis=1)
            levels.append({
                "level": level, "rows": int(rows), "dense": bool(geometry.dense[level]),
                "mode": modes.tolist(), "mode_rows": int(at_mode.sum()), "zero_rows": int(zero.sum()),
                "level_bits": float(bits.sum()), "mode_row_bits": float(bits[at_mode].sum()),
                "bits_per_mode_row": float(bits[at_mode].mean()) if at_mode.any() else 0.0,
            })  # fmt: skip
        total = {k: sum(lv[k] for lv in levels) for k in ("rows", "mode_rows", "zero_rows", "level_bits",
                                                          "mode_row_bits")}  # fmt: skip
        grids.append({"grid": name, "entropy_model": entry.entropy_model, "levels": levels, "total": total})
    result = {"date": today(), "machine": machine(), "command": command_line(), "file": args.scene.name,
              "file_bytes": len(data), "grids": grids}  # fmt: skip
    for g in grids:
        t = g["total"]
        print(f"{g['grid']}: {t['mode_rows']:,} of {t['rows']:,} rows at the mode ({100 * t['mode_rows'] / t['rows']:.1f}%), "
              f"{t['zero_rows']:,} all-zero; they cost {t['mode_row_bits'] / 8:,.0f} of {t['level_bits'] / 8:,.0f} "
              "latent bytes")  # fmt: skip
        for lv in g["levels"]:
            print(f"  level {lv['level']:>2} {'dense ' if lv['dense'] else 'hashed'} {lv['rows']:>8,} rows: "
                  f"{lv['mode_rows']:>8,} at mode {lv['mode']} ({100 * lv['mode_rows'] / lv['rows']:5.1f}%), "
                  f"{lv['zero_rows']:>8,} zero, {lv['bits_per_mode_row']:.3f} bits each, "
                  f"{lv['mode_row_bits'] / 8:>9,.0f} of {lv['level_bits'] / 8:>9,.0f} bytes")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
