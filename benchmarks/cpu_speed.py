"""Seconds per iteration of `shacira-tiny` against the same preset with nerfacto's stock grid, on this CPU.

Both run through `ns-train`, one after the other in the same invocation, on the bundled scene, with the same
rays, samples, levels, table size and MLP widths; the only difference is the encoding (SHACIRA grid + rate term
vs nerfstudio's torch HashEncoding). Reports the steady-state median iteration time of each and their ratio.

    python benchmarks/cpu_speed.py --iterations 300
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_jsonl, command_line, machine, steady_iteration_seconds, today  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCENE = REPO / "data" / "shacira-toy"
NS_BENCH = HERE / "gpu" / "ns_bench.py"
"""The offline ns-train launcher shared with the GPU benchmarks."""

# nerfacto with exactly shacira-tiny's settings (see method_configs/shacira.py), stock hash grid.
NERFACTO_AS_TINY = [
    "nerfacto", "--machine.device-type", "cpu", "--mixed-precision", "False",
    "--pipeline.model.implementation", "torch",
    "--pipeline.datamanager.train-num-rays-per-batch", "512", "--pipeline.datamanager.eval-num-rays-per-batch", "512",
    "--pipeline.model.eval-num-rays-per-chunk", "4096",
    "--pipeline.model.num-levels", "8", "--pipeline.model.max-res", "256", "--pipeline.model.log2-hashmap-size", "15",
    "--pipeline.model.hidden-dim", "32", "--pipeline.model.hidden-dim-color", "32",
    "--pipeline.model.appearance-embed-dim", "8",
    "--pipeline.model.num-nerf-samples-per-ray", "24", "--pipeline.model.num-proposal-samples-per-ray", "64", "32",
    "--pipeline.model.proposal-warmup", "500", "--pipeline.model.camera-optimizer.mode", "off",
    "--pipeline.model.proposal-net-args-list.0.log2-hashmap-size", "13",
    "--pipeline.model.proposal-net-args-list.0.num-levels", "4", "--pipeline.model.proposal-net-args-list.0.max-res", "64",
    "--pipeline.model.proposal-net-args-list.0.hidden-dim", "16",
    "--pipeline.model.proposal-net-args-list.1.log2-hashmap-size", "13",
    "--pipeline.model.proposal-net-args-list.1.num-levels", "4", "--pipeline.model.proposal-net-args-list.1.max-res", "128",
    "--pipeline.model.proposal-net-args-list.1.hidden-dim", "16",
]  # fmt: skip


def train(method_args, out: Path, name: str, iterations: int, extra_tail=()) -> Path:
    # Stock nerfacto needs the offline launcher (it builds LPIPS, which downloads AlexNet); shacira does not. The
    # baseline keeps nerfstudio's stock gather here (SHACIRA_BENCH_GATHER=index), as measured in benchmarks/README.md.
    launcher = ["ns-train"] if method_args[0].startswith("shacira") else [sys.executable, str(NS_BENCH), "train"]
    args = [*launcher, *method_args, "--data", str(SCENE), "--max-num-iterations", str(iterations),
            "--vis", "tensorboard", "--output-dir", str(out), "--experiment-name", "bench", "--timestamp", name,
            "--steps-per-eval-batch", "100000", "--steps-per-eval-image", "100000", *extra_tail]  # fmt: skip
    env = {**os.environ, "SHACIRA_BENCH_GATHER": "index"}
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return next(out.glob(f"bench/*/{name}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        shacira_run = train(["shacira-tiny"], out, "shacira", args.iterations)
        nerfacto_run = train(NERFACTO_AS_TINY, out, "nerfacto", args.iterations, ["blender-data"])
        s = steady_iteration_seconds(shacira_run)
        n = steady_iteration_seconds(nerfacto_run)
    row = {
        "benchmark": "cpu_speed", "scene": "shacira-toy", "iterations": args.iterations,
        "shacira_tiny_seconds_per_iter": round(s, 4), "nerfacto_same_preset_seconds_per_iter": round(n, 4),
        "ratio": round(s / n, 3), "date": today(), "machine": machine(), "command": command_line(),
    }  # fmt: skip
    path = append_jsonl("cpu_speed.jsonl", [row])
    print(f"shacira-tiny {s * 1000:.1f} ms/iter, nerfacto (same preset) {n * 1000:.1f} ms/iter, ratio {s / n:.2f}x")
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
