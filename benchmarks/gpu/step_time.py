"""Training-step time of nerfacto and shacira on every lookup backend, side by side in one process (the GPU machine).

Protocol (issue 13): lego with nerfstudio's Blender flags, 4096 rays per batch, one process alone on the GPU; each
(method, backend) builds its pipeline from its method config, runs WARMUP steps, then STEPS timed optimizer steps
(forward, backward, Adam; mixed precision and nerfstudio's gradient scaler, as in ns-train's ``train_iteration``),
synchronised; the figure is the median of per-step times. A run is ``method:backend[:option+option]``; options:
``compile`` (``--pipeline.model.compile``: nerfacto's per-step functions through ``torch.compile``; the first step,
which compiles, is reported as ``first_step_s``) and ``fused`` (Adam's fused kernel: one launch per parameter group,
and the gradient scaler's inf check without a host sync; shacira's configs use it already) and ``per_level``
(``--pipeline.model.entropy-model per_level``).
nerfacto runs nerfstudio's torch grid with the benchmarks' ``index_select`` gather (``ns_bench.py``; the stock gather
takes about a second a step with these flags, and is timed too when STOCK_STEPS > 0). Writes one JSON line per
(method, backend) with one ``run_id`` for the whole process.

    python3 benchmarks/gpu/step_time.py .gpu/lego --out $OUT/step_time.jsonl [--steps 100] [--profile]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def build(method: str, data: Path, backend: str, rays: int, options: tuple = ()):
    from nerfstudio.configs.method_configs import all_methods
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
    from nerfstudio.engine.optimizers import Optimizers

    cfg = all_methods[method]
    pipe_cfg = cfg.pipeline
    pipe_cfg.datamanager = VanillaDataManagerConfig(
        _target=VanillaDataManager, dataparser=BlenderDataParserConfig(data=data), train_num_rays_per_batch=rays
    )
    m = pipe_cfg.model
    m.implementation = backend
    if method == "shacira":
        m.compile = "compile" in options
        m.entropy_model = "per_level" if "per_level" in options else m.entropy_model
    # nerfstudio's Blender flags (its benchmark script): white background, uniform initial sampler, no contraction.
    m.background_color, m.proposal_initial_sampler = "white", "uniform"
    m.near_plane, m.far_plane, m.disable_scene_contraction = 2.0, 6.0, True
    m.camera_optimizer.mode = "off"
    m.use_average_appearance_embedding, m.distortion_loss_mult = False, 0.0
    pipeline = pipe_cfg.setup(device="cuda", test_mode="val")
    pipeline.train()
    optimizers = Optimizers(cfg.optimizers, pipeline.get_param_groups())
    if "fused" in options:
        for name, opt in optimizers.optimizers.items():
            groups = [{k: v for k, v in g.items() if k not in ("foreach", "fused")} for g in opt.param_groups]
            optimizers.optimizers[name] = torch.optim.Adam(groups, fused=True)
    optimizers.grad_scaler = torch.amp.GradScaler("cuda")  # one per pipeline, as the Trainer holds one
    return pipeline, optimizers


def step(pipeline, optimizers, i: int, max_steps: int = 30000) -> None:
    """One step as nerfstudio's ``Trainer.train_iteration`` runs it (autocast, gradient scaler)."""
    model = pipeline.model
    scaler = optimizers.grad_scaler
    if hasattr(model, "quantizer"):
        model.quantizer.set_progress(i, max_steps)  # the annealing callback of a real run
    optimizers.zero_grad_all()
    with torch.autocast("cuda", enabled=True):
        _, loss_dict, _ = pipeline.get_train_loss_dict(i)
        loss = sum(loss_dict.values())
    scaler.scale(loss).backward()
    optimizers.optimizer_scaler_step_all(scaler)
    scaler.update()


def timed(pipeline, optimizers, warmup: int, steps: int) -> tuple:
    """(median seconds per step, seconds of the first step)."""
    t = time.perf_counter()
    step(pipeline, optimizers, 0)
    torch.cuda.synchronize()
    first = time.perf_counter() - t
    for i in range(1, warmup):
        step(pipeline, optimizers, i)
    torch.cuda.synchronize()
    times = []
    for i in range(warmup, warmup + steps):
        t = time.perf_counter()
        step(pipeline, optimizers, i)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), first


def main() -> None:
    import ns_bench

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rays", type=int, default=4096)
    parser.add_argument("--stock-steps", type=int, default=int(os.environ.get("STOCK_STEPS", "0")))
    parser.add_argument("--profile", action="store_true", help="print the top kernels of --profile-run")
    parser.add_argument("--profile-run", default="shacira:triton", help="the runs --profile profiles (comma-separated)")
    parser.add_argument("--runs", nargs="*", default=["nerfacto:torch", "shacira:torch", "shacira:triton"])
    args = parser.parse_args()

    ns_bench.disable_lpips_if_offline()
    import shacira_nerf.nerf  # noqa: F401

    run_id = uuid.uuid4().hex[:12]
    base = {
        "run_id": run_id,
        "date": datetime.date.today().isoformat(),
        "machine": f"{torch.cuda.get_device_name()} ({os.cpu_count()} cores), torch {torch.__version__}, "
        f"Python {platform.python_version()}",
        "command": "python3 " + " ".join(sys.argv),
        "scene": args.data.name,
        "rays_per_batch": args.rays,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def record(method: str, backend: str, seconds: float, steps: int, **extra) -> None:
        row = {**base, "method": method, "backend": backend, "ms_per_step": round(1000 * seconds, 2)}
        row.update(steps=steps, **extra)
        print(json.dumps(row), flush=True)
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")

    if args.stock_steps > 0:
        pipeline, optimizers = build("nerfacto", args.data, "torch", args.rays)
        record("nerfacto", "torch", timed(pipeline, optimizers, 2, args.stock_steps)[0], args.stock_steps,
               gather="stock advanced indexing")  # fmt: skip
        del pipeline, optimizers
        torch.cuda.empty_cache()
    ns_bench.use_index_select_gather()
    for spec in args.runs:
        method, backend, *rest = spec.split(":")
        options = tuple(rest[0].split("+")) if rest else ()
        pipeline, optimizers = build(method, args.data, backend, args.rays, options)
        extra = {"gather": "index_select"} if method == "nerfacto" else {}
        seconds, first = timed(pipeline, optimizers, args.warmup, args.steps)
        record(method, backend, seconds, args.steps, options=list(options), grad_scaler=True,
               first_step_s=round(first, 2), **extra)  # fmt: skip
        if args.profile and spec in args.profile_run.split(","):
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for i in range(5):
                    step(pipeline, optimizers, 1000 + i)
                torch.cuda.synchronize()
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30), flush=True)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), flush=True)
            # The GPU's own work per step against the step's wall time: how far the host's launches bound the step.
            # (Kernel rows only; the first version of this sum also counted operator rows, 27.9 ms a step where
            # the profiler's own total said 13.7.)
            summary = ns_bench.profile_summary(prof, 5, 5 * seconds)
            print(json.dumps({"profile_run": spec, **summary}), flush=True)
        del pipeline, optimizers
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
