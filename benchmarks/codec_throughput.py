"""Entropy-coding throughput and efficiency for a grid of nerfacto's default size, on this CPU.

A SHACIRA grid with 16 levels, 2^19 entries and 2 latent dims (12.2 M latents) gets integer latents drawn from a
discretised Laplace distribution (scale 1.5, about 2.6 bits/latent), its entropy model is fitted to them (Adam,
300 steps), and then ``bitstream.encode_grid`` / ``decode_grid`` are timed. Reported: latents per second each way,
and the coded latent bytes against the Shannon bound under the stored integer tables (target: within 1%).

    python benchmarks/codec_throughput.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_jsonl, command_line, machine, today  # noqa: E402

from shacira_nerf.bitstream import decode_grid, encode_grid  # noqa: E402
from shacira_nerf.core import GridGeometry, ShaciraGrid  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    geometry = GridGeometry(dim=3, num_levels=16, min_res=16, max_res=2048, log2_hashmap_size=19)
    grid = ShaciraGrid(geometry, latent_dim=2, feature_dim=4)
    rng = np.random.default_rng(0)
    values = np.round(rng.laplace(0.0, 1.5, size=tuple(grid.latents.values.shape))).clip(-40, 40)
    with torch.no_grad():
        grid.latents.values.copy_(torch.from_numpy(values).float())
    q = grid.latents.values.detach()
    sample = q[torch.randperm(q.shape[0])[:200_000]]
    opt = torch.optim.Adam(grid.entropy_model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        (-torch.log2(grid.entropy_model.likelihood(sample)).mean()).backward()
        opt.step()
    n = grid.latents.num_latents
    t0 = time.perf_counter()
    header, sections = encode_grid(grid, "field")
    t1 = time.perf_counter()
    decoded = decode_grid(header, dict(sections), "field", geometry.level_sizes)
    t2 = time.perf_counter()
    assert np.array_equal(decoded, values.astype(np.int32)), "decode mismatch"
    coded = sum(len(b) for name, b in sections if "/latents/" in name)
    shannon = header["shannon_bits"] / 8
    values_flat = values.astype(np.int64).ravel()
    _, counts = np.unique(values_flat, return_counts=True)
    p = counts / counts.sum()
    empirical = -(p * np.log2(p)).sum() * n / 8  # pooled over both dims: a reference, not the bound
    row = {
        "benchmark": "codec", "grid": "16 levels x 2^19 x 2 latent dims", "num_latents": n,
        "encode_latents_per_s": round(n / (t1 - t0)), "decode_latents_per_s": round(n / (t2 - t1)),
        "coded_latent_bytes": coded, "shannon_bound_bytes": round(shannon),
        "overhead_vs_shannon": round(coded / shannon - 1, 6), "empirical_entropy_bytes": round(empirical),
        "date": today(), "machine": machine(), "command": command_line(),
    }  # fmt: skip
    append_jsonl("codec.jsonl", [row])
    print(f"{n:,} latents: encode {n / (t1 - t0) / 1e6:.1f} M/s, decode {n / (t2 - t1) / 1e6:.1f} M/s; "
          f"{coded:,} bytes coded vs Shannon bound {shannon:,.0f} ({100 * (coded / shannon - 1):.3f}% over)")  # fmt: skip


if __name__ == "__main__":
    main()
