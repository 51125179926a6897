"""What other entropy models could save on a real scene file: bits of its integer latents under alternatives.

Reads a `.shac` scene file (its stored integer latents; no training) and reports, per grid, the coded latent bytes
in the file against ideal (Shannon) bits of the same integers under:
- one table per latent dimension for the whole grid (what the file does: the appendix's factorized model), ideal;
- one table per level and dimension (coarse and fine levels have different statistics), ideal, plus the cost of
  storing the extra tables (about 2 bytes per used symbol);
- the same conditioned on the row being all-zero in the previous dimension (a cheap context the decoder has).
These are ideal code lengths of the empirical histograms: a lower bound of what a trained model of that kind codes,
to decide which model is worth building (issue 15). CPU only.

    python benchmarks/entropy_models.py tests/fixtures/lego_h200_lambda0.1.shac [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine, today  # noqa: E402

TABLE_BYTES_PER_SYMBOL = 2
"""A stored integer table costs about this much per used symbol (16-bit frequencies)."""


def entropy_bits(values: np.ndarray) -> float:
    """Ideal code length of ``values`` under their own histogram."""
    if values.size == 0:
        return 0.0
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from shacira_nerf.nerf.scene_file import load_scene

    loaded = load_scene(args.scene)
    sections = {s["name"]: s["payload_bytes"] for s in _sections(args.scene)}
    rows = []
    for name, grid in loaded.model.grids.items():
        q = torch.round(grid.latents.values.detach()).to(torch.int64).numpy()
        offsets = grid.latents.offsets
        coded = sum(v for k, v in sections.items() if k.startswith(f"{name}/latents/"))
        global_bits = sum(entropy_bits(q[:, d]) for d in range(q.shape[1]))
        per_level_bits, per_level_tables, context_bits = 0.0, 0, 0.0
        for level in range(len(offsets) - 1):
            block = q[offsets[level] : offsets[level + 1]]
            for d in range(q.shape[1]):
                per_level_bits += entropy_bits(block[:, d])
                per_level_tables += len(np.unique(block[:, d]))
            # dimension 0 alone, then dimension d > 0 given whether dimension 0 of the row is zero
            context_bits += entropy_bits(block[:, 0])
            for d in range(1, q.shape[1]):
                zero = block[:, 0] == 0
                context_bits += entropy_bits(block[zero, d]) + entropy_bits(block[~zero, d])
        rows.append({
            "grid": name, "latents": int(q.size), "coded_latent_bytes": int(coded),
            "ideal_global_bytes": global_bits / 8,
            "ideal_per_level_bytes": per_level_bits / 8,
            "per_level_table_bytes": per_level_tables * TABLE_BYTES_PER_SYMBOL,
            "ideal_per_level_with_context_bytes": context_bits / 8,
            "zero_fraction": float((q == 0).mean()),
        })  # fmt: skip
    total = {k: sum(r[k] for r in rows) for k in rows[0] if k not in ("grid", "zero_fraction")}
    result = {
        "date": today(), "machine": machine(), "command": command_line(), "file": args.scene.name,
        "file_bytes": loaded.file_bytes, "grids": rows, "total": total,
    }  # fmt: skip
    for r in rows + [dict(total, grid="all")]:
        print(
            f"{r['grid']:>10}: coded {r['coded_latent_bytes']:>9,} B | ideal global {r['ideal_global_bytes']:>11,.0f} | "
            f"per level {r['ideal_per_level_bytes']:>11,.0f} (+{r['per_level_table_bytes']:,} tables) | "
            f"+ zero context {r['ideal_per_level_with_context_bytes']:>11,.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


def _sections(path: Path) -> list:
    """Section names and payload lengths, from ``shacira info``'s reader."""
    from shacira_nerf.report import file_report

    return file_report(path.read_bytes())["sections"]


if __name__ == "__main__":
    main()
