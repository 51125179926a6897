"""Hash-grid lookup at fixed points: cached-corner gather vs sparse matrix, forward + backward, one process.

The gather paths are what image fits used before the matrix: corner rows and weights computed once, then per step
either one ``index_select`` per column (``fit_image``) or one of whole rows for all columns (the batched fitter), whose
backward is an ``index_add`` (atomic on CUDA), and the weighted sum over corners.

    python benchmarks/lookup_matrix.py [--height 256 --width 384 --levels 24 --log2 11 --channels 3 --repeats 5]

Prints one JSON line (date, machine, command, seconds per forward+backward of each path, their ratio, max difference).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time

import torch

from shacira_nerf.core.hash_grid import GridGeometry, corner_indices_and_weights, hash_grid_interpolate
from shacira_nerf.core.interpolation_matrix import InterpolationMatrix
from shacira_nerf.image.field import pixel_centres


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--levels", type=int, default=24)
    parser.add_argument("--log2", type=int, default=11)
    parser.add_argument("--channels", type=int, default=3, help="table columns (e.g. members of a batched fit)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    geometry = GridGeometry(2, args.levels, 16, max(args.height, args.width), args.log2)
    x = pixel_centres(args.height, args.width, device)
    start = time.time()
    matrix = InterpolationMatrix(x, geometry)
    build_s = time.time() - start
    table = torch.randn(geometry.offsets[-1], args.channels, device=device, requires_grad=True)
    upstream = torch.randn(x.shape[0], args.levels, args.channels, device=device)
    rows, weights = corner_indices_and_weights(x, geometry)
    flat = rows.reshape(-1)

    def gather() -> torch.Tensor:
        columns = [(torch.index_select(table[:, k], 0, flat).view_as(weights) * weights).sum(-1)
                   for k in range(table.shape[1])]  # fmt: skip
        return torch.stack(columns, dim=-1)

    def gather_rows() -> torch.Tensor:
        g = torch.index_select(table, 0, flat).view(*weights.shape, table.shape[1])
        return (g * weights.unsqueeze(-1)).sum(2)

    paths = {"gather": gather, "gather_rows": gather_rows, "matrix": lambda: matrix.apply(table)}
    seconds = {}
    for name, run in paths.items():
        run().backward(upstream)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.time()
        for _ in range(args.repeats):
            run().backward(upstream)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds[name] = (time.time() - start) / args.repeats
    with torch.no_grad():
        diff = float((hash_grid_interpolate(table, x, geometry) - paths["matrix"]()).abs().max())
    print(json.dumps({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(device)},
        "command": " ".join([sys.executable, *sys.argv]),
        "points": x.shape[0], "levels": args.levels, "channels": args.channels, "build_s": round(build_s, 3),
        "gather_s": round(seconds["gather"], 5), "gather_rows_s": round(seconds["gather_rows"], 5),
        "matrix_s": round(seconds["matrix"], 5),
        "ratio_gather_to_matrix": round(seconds["gather"] / seconds["matrix"], 2),
        "ratio_gather_rows_to_matrix": round(seconds["gather_rows"] / seconds["matrix"], 2), "max_abs_difference": diff,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
