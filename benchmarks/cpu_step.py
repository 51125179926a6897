"""Time per training step of `shacira-tiny` on this CPU, for the code of a given source tree (before/after a change).

Builds the `shacira-tiny` pipeline from the tree's own method config on the bundled scene, runs WARMUP steps, then
STEPS timed optimizer steps (forward, backward, Adam, the annealing schedule as ns-train moves it), and appends the
median to a JSON-lines file. Run it once per tree, one after the other on an idle machine:

    git worktree add /tmp/before <commit>
    python benchmarks/cpu_step.py --tree /tmp/before --label before --out benchmarks/results/cpu_step.jsonl
    python benchmarks/cpu_step.py --tree . --label after --out benchmarks/results/cpu_step.jsonl
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, required=True, help="the source tree whose code is timed")
    parser.add_argument("--label", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument(
        "--start-step", type=int, default=0,
        help="training step of the first step run (the quantizer's schedule follows it: 1050 of shacira-tiny's 1500 "
        "steps is where annealing ends and straight-through rounding begins)",
    )  # fmt: skip
    args = parser.parse_args()
    tree = args.tree.resolve()
    sys.path[:0] = [str(tree), str(tree / "method_configs")]  # this tree's shacira_nerf and its method configs
    import torch

    torch.set_num_threads(2)
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    from common import command_line, machine, today

    import shacira_nerf

    assert Path(shacira_nerf.__file__).resolve().is_relative_to(tree), shacira_nerf.__file__
    configs = importlib.import_module("shacira")
    from nerfstudio.engine.optimizers import Optimizers

    config = configs.shacira_tiny.config
    config.pipeline.datamanager.data = tree / "data" / "shacira-toy"
    config.pipeline.datamanager.dataparser.data = tree / "data" / "shacira-toy"
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    pipeline.train()
    optimizers = Optimizers(config.optimizers, pipeline.get_param_groups())
    total = args.warmup + args.steps
    times = []
    for i in range(total):
        t = time.perf_counter()
        pipeline.model.quantizer.set_progress(args.start_step + i, config.max_num_iterations)
        optimizers.zero_grad_all()
        _, loss_dict, _ = pipeline.get_train_loss_dict(i)
        sum(loss_dict.values()).backward()
        optimizers.optimizer_step_all()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    row = {
        "date": today(), "machine": machine(), "command": command_line(), "label": args.label,
        "tree_commit": commit.stdout.strip(), "method": "shacira-tiny", "seconds_per_step": statistics.median(times),
        "steps": args.steps, "warmup": args.warmup, "start_step": args.start_step,
    }  # fmt: skip
    print(json.dumps(row))
    with args.out.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
