"""What other entropy models could save on a real scene file: bits of its integer latents under alternatives.

Reads a `.shac` scene file (its stored integer latents; no training) and reports, per grid, the coded latent bytes
in the file against ideal (Shannon) bits of the same integers under:
- one table per latent dimension for the whole grid (what the file does: the appendix's factorized model), ideal;
- one table per level and dimension (coarse and fine levels have different statistics), ideal, plus the cost of
  storing the extra tables (about 2 bytes per used symbol);
- the same conditioned on the row being all-zero in the previous dimension (a cheap context the decoder has).
These are ideal code lengths of the empirical histograms: a lower bound of what a trained model of that kind codes,
to decide which model is worth building (issue 15).

With ``--fit-steps N`` it also writes real files: for each built entropy model ("factorized", "per_level") every
grid gets a fresh model of that kind, refit alone to the file's integers (``EntropyModel.refit``, up to N steps,
early stop), and the whole scene is encoded (``encode_scene``) and decoded again (the integers must come back bit for
bit); the report gives each file's bytes split into latents, tables, headers and the rest, from ``shacira info``'s
reader. Same integers, same networks: only the entropy model differs. CPU only.

    python benchmarks/entropy_models.py tests/fixtures/lego_h200_lambda0.1.shac [--fit-steps 3000] [--json out.json]
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
    parser.add_argument("--fit-steps", type=int, default=0, help="refit and encode each entropy model (0: skip)")
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
    if args.fit_steps > 0:
        result["fitted"] = fitted_files(loaded, args.fit_steps)
        base = result["fitted"][0]
        for r in result["fitted"]:
            change = 100 * (r["latent_bytes"] / base["latent_bytes"] - 1)
            print(f"{r['entropy_model']:>10}: file {r['file_bytes']:>9,} B | latents {r['latent_bytes']:>9,} "
                  f"({change:+.2f}%) | tables {r['table_bytes']:>6,} | headers {r['header_bytes']:>6,} | "
                  f"estimate {r['estimate_bytes']:>11,.0f} | refit {r['refit_seconds']:.1f} s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


def fitted_files(loaded, steps: int) -> list:
    """For each entropy model: refit a fresh one per grid to the grid's integers, encode the scene, decode it."""
    import time

    from shacira_nerf.codec import decode_container
    from shacira_nerf.core.grid import make_entropy_model
    from shacira_nerf.nerf.scene_file import decode_scene, encode_scene
    from shacira_nerf.report import file_report

    model = loaded.model
    integers = {name: torch.round(g.latents.values.detach()) for name, g in model.grids.items()}
    out = []
    for kind in ("factorized", "per_level"):
        torch.manual_seed(0)
        model.config.entropy_model = kind
        start = time.perf_counter()
        estimate = 0.0
        for name, grid in model.grids.items():
            grid.entropy_model = make_entropy_model(kind, grid.latents, tuple(model.config.entropy_filters))
            grid.entropy_model.refit(integers[name], steps)
            estimate += grid.entropy_model.estimate_bits(integers[name]) / 8
        seconds = time.perf_counter() - start
        data = encode_scene(model, loaded.cameras, loaded.header.get("dataparser_transform"))
        decoded = decode_scene(data)
        for name, grid in decoded.model.grids.items():
            assert torch.equal(grid.latents.values, integers[name]), f"{kind}: {name} does not decode bit-exactly"
        report = file_report(data)
        by_kind = report["bytes_by_kind"]
        header, _ = decode_container(data)
        out.append({
            "entropy_model": kind, "file_bytes": len(data), "latent_bytes": report["latent_bytes"],
            "latent_framed_bytes": by_kind["latents"], "table_bytes": by_kind["entropy_tables"],
            "header_bytes": by_kind["header"],
            "grid_entry_json_bytes": len(json.dumps(header["grids"], separators=(",", ":"))),
            "shannon_bytes": report["shannon_bits"] / 8, "estimate_bytes": estimate,
            "bytes_by_kind": by_kind, "refit_seconds": seconds, "refit_steps": steps,
        })  # fmt: skip
    return out


def _sections(path: Path) -> list:
    """Section names and payload lengths, from ``shacira info``'s reader."""
    from shacira_nerf.report import file_report

    return file_report(path.read_bytes())["sections"]


if __name__ == "__main__":
    main()
