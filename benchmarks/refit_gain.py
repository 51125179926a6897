"""What refitting the entropy models after training saves: a run's file before and after ``EntropyModel.refit``.

Loads a trained shacira run (its config.yml; train it with `--pipeline.model.entropy-refit-steps 0` so that its
checkpoint holds the entropy models as training left them), writes its scene file's bytes as `shacira export` does,
refits every grid's entropy model to its final integer latents, and writes them again. The latents and networks do
not change, so the rendering does not either; only the probability tables, and so the coded latents, do.

    python benchmarks/refit_gain.py outputs/.../config.yml [--steps 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine, today  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from nerfstudio.utils.eval_utils import eval_setup

    import shacira_nerf.nerf  # noqa: F401 - the checkpoint allow-list
    from shacira_nerf.nerf.scene_file import encode_pipeline

    _, pipeline, _, step = eval_setup(args.config, test_mode="inference")
    before = encode_pipeline(pipeline)
    t = time.perf_counter()
    for g in pipeline.model.grids.values():
        g.entropy_model.refit(torch.round(g.latents.values.detach()), args.steps)
    seconds = time.perf_counter() - t
    after = encode_pipeline(pipeline)
    result = {
        "date": today(), "machine": machine(), "command": command_line(), "run": str(args.config.parent),
        "checkpoint_step": step, "refit_steps": args.steps, "refit_seconds": round(seconds, 2),
        "bytes_before": len(before), "bytes_after": len(after),
        "change": len(after) / len(before) - 1.0,
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
