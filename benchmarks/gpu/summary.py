"""One benchmark run's summary line (``runs.jsonl``): eval metrics, step time, training time and size.

    python3 summary.py RUN_DIR OUT NAME METHOD ITERS T0 T1 COMMAND      (train_eval.sh, after ns-eval and export)

``ns_bench.py run`` calls ``summarize`` in its own process instead. Inputs: the run's tensorboard events (step
time: median of nerfstudio's per-step "Train Iter (time)" over the last 80% of steps; "Train Total (time)" of every
segment), ``OUT/NAME.eval.json`` (ns-eval's format) and, for shacira, ``OUT/NAME.info.json`` (``shacira info
--json``: the file's bytes). nerfacto's size is its grids' parameters at float16 (and float32), read from the last
checkpoint.
"""

from __future__ import annotations

import glob
import json
import sys

import torch


def step_times(run: str) -> tuple:
    """(per-step seconds by step, the "Train Total" of each segment): every resumed segment writes its own event
    file, and their steps do not overlap."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps, totals = {}, []
    for events in sorted(glob.glob(f"{run}/events.out.tfevents.*")):
        acc = EventAccumulator(events, size_guidance={"scalars": 0})
        acc.Reload()
        tags = acc.Tags()["scalars"]
        if "Train Iter (time)" in tags:
            steps.update({e.step: e.value for e in acc.Scalars("Train Iter (time)")})
        if "Train Total (time)" in tags:
            totals += [e.value for e in acc.Scalars("Train Total (time)")]
    return steps, totals


def summarize(run: str, out: str, name: str, method: str, iters: int, wall_seconds: float, command: str) -> dict:
    steps, totals = step_times(run)
    last = max(steps)
    steady = sorted(v for s, v in steps.items() if s >= 0.2 * last)
    ev = json.load(open(f"{out}/{name}.eval.json"))["results"]
    row = {"name": name, "method": method, "iterations": int(iters), "psnr": ev["psnr"], "ssim": ev["ssim"],
           "lpips": ev.get("lpips"), "seconds_per_iter": steady[len(steady) // 2],
           # each segment logs its own "Train Total"; without one, the wall clock of the training
           "train_seconds": sum(totals) if totals else wall_seconds,
           "segments": len(glob.glob(f"{run}/events.out.tfevents.*")), "command": command,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "eval": ev}  # fmt: skip
    if method == "nerfacto":
        from shacira_nerf.checkpoints import allow_nerfstudio_checkpoints  # numpy scalars only; loading stays safe

        allow_nerfstudio_checkpoints()
        ck = sorted(glob.glob(f"{run}/nerfstudio_models/*.ckpt"))[-1]
        sd = torch.load(ck, map_location="cpu", weights_only=True)["pipeline"]
        n = sum(v.numel() for k, v in sd.items()
                if k.startswith(("_model.field.", "_model.proposal_networks.")) and v.is_floating_point())  # fmt: skip
        row["size_bytes_fp32"], row["size_bytes"] = 4 * n, 2 * n
    else:
        info = json.load(open(f"{out}/{name}.info.json"))
        row["size_bytes"] = info["total_bytes"]
        row["estimate_MB"] = (info.get("estimate") or {}).get("size_MB")
        row["bits_per_latent"] = info["bits_per_latent"]
    return row


if __name__ == "__main__":
    run_dir, out_dir, run_name, run_method, run_iters, t0, t1, cmd = sys.argv[1:]
    print(json.dumps(summarize(run_dir, out_dir, run_name, run_method, int(run_iters), float(t1) - float(t0), cmd)))
