"""Training-step time of nerfacto and shacira on every lookup backend, side by side in one process (the GPU machine).

Protocol (issue 13): lego with nerfstudio's Blender flags, 4096 rays per batch, one process alone on the GPU; each
(method, backend) builds its pipeline from its method config, runs WARMUP steps, then STEPS timed optimizer steps
(forward, backward, Adam; mixed precision and nerfstudio's gradient scaler, as in ns-train's ``train_iteration``),
synchronised; the figure is the median of per-step times. A run is ``method:backend[:option+option]``; options:
- ``compile``: ``--pipeline.model.compile`` (nerfacto's per-step functions through ``torch.compile``; the first
  step, which compiles, is reported as ``first_step_s``);
- ``fused``: Adam's fused kernel (one launch per parameter group, the gradient scaler's inf check without a host
  sync; shacira's configs use it already);
- ``per_level``: ``--pipeline.model.entropy-model per_level``;
- ``soft_round``: the appendix's quantizer and anneal fraction 0.95 instead of the default SGA and 0.7;
- ``sga_kernel``: ``--pipeline.model.sga-kernel True`` (SGA as one Triton kernel, ``core/triton_sga.py``);
- ``graph``: ``--pipeline.model.cuda-graph True`` (each step's forward and backward replayed as CUDA graphs,
  ``nerf/step_graph.py``; the first step, which captures, is reported as ``first_step_s``). The timed steps never
  run nerfacto's step callbacks, so the proposal networks train every step (the sampler's step stays 0) for every
  run: one graph;
- ``points_grad``: the main field computes the grid's gradient with respect to its points every step, as before
  ``ShaciraNerfactoField.forward`` skipped it.
``--rounds R`` builds every run first and times them in R alternating blocks (one process's figures drift by more
than the differences measured).
nerfacto runs nerfstudio's torch grid with the benchmarks' ``index_select`` gather (``ns_bench.py``; the stock gather
takes about a second a step with these flags, and is timed too when STOCK_STEPS > 0). Writes one JSON line per
(method, backend) with one ``run_id`` for the whole process.

    python3 benchmarks/gpu/step_time.py .gpu/lego --out $OUT/step_time.jsonl [--steps 100] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import functools
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

    # A copy: the model keeps its config object and reads some fields while training (cuda_graph, compile), so
    # pipelines built from one shared config would all follow the last one built.
    cfg = copy.deepcopy(all_methods[method])
    pipe_cfg = cfg.pipeline
    pipe_cfg.datamanager = VanillaDataManagerConfig(
        _target=VanillaDataManager, dataparser=BlenderDataParserConfig(data=data), train_num_rays_per_batch=rays
    )
    m = pipe_cfg.model
    m.implementation = backend
    if method == "shacira":
        m.compile = "compile" in options
        m.entropy_model = "per_level" if "per_level" in options else m.entropy_model
        m.sga_kernel = "sga_kernel" in options
        m.cuda_graph = "graph" in options
        if "soft_round" in options:  # the appendix's quantizer (the default before SGA)
            m.quantizer, m.anneal_fraction = "soft_round", 0.95
    # nerfstudio's Blender flags (its benchmark script): white background, uniform initial sampler, no contraction.
    m.background_color, m.proposal_initial_sampler = "white", "uniform"
    m.near_plane, m.far_plane, m.disable_scene_contraction = 2.0, 6.0, True
    m.camera_optimizer.mode = "off"
    m.use_average_appearance_embedding, m.distortion_loss_mult = False, 0.0
    pipeline = pipe_cfg.setup(device="cuda", test_mode="val")
    pipeline.train()
    if "points_grad" in options:  # nerfstudio's own field forward: the grid's gradient into its points every step
        from nerfstudio.fields.nerfacto_field import NerfactoField

        pipeline.model.field.forward = functools.partial(NerfactoField.forward, pipeline.model.field)
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
    with torch.profiler.record_function("region:backward"):
        scaler.scale(loss).backward()
    with torch.profiler.record_function("region:optimizer"):
        optimizers.optimizer_scaler_step_all(scaler)
        scaler.update()


REGIONS = {
    "data": ("datamanager", "next_train"),
    "forward": ("model", "get_outputs"),
    "proposal_sampler": ("model.proposal_sampler", "generate_ray_samples"),
    "field": ("model.field", "forward"),
    "renderers": ("model.renderer_rgb", "forward"),
    "metrics_and_rate": ("model", "get_metrics_dict"),
    "losses": ("model", "get_loss_dict"),
}
"""Host-side regions of a step for ``--profile``: label -> (attribute path from the pipeline, method)."""


@contextlib.contextmanager
def labelled_regions(pipeline):
    """Wrap each of ``REGIONS``' methods and every grid's forward (ours and nerfstudio's ``HashEncoding``) in a
    ``record_function`` range, so that the profile says how much host time each part of the step takes."""
    from nerfstudio.field_components.encodings import HashEncoding

    patched = []

    def wrap(owner, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def labelled(*args, **kwargs):
            with torch.profiler.record_function(f"region:{label}"):
                return inner(*args, **kwargs)

        patched.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, labelled)

    for label, (path, name) in REGIONS.items():
        owner = pipeline
        for part in path.split("."):
            owner = getattr(owner, part, None)
        if owner is not None and hasattr(owner, name):
            wrap(owner, name, label)
    for module in pipeline.model.modules():
        if type(module).__name__ == "ShaciraGrid":
            wrap(module, "forward", "grid_lookup")
            wrap(module, "rate_bits", "grid_rate")
            wrap(module, "lookup_latents", "grid_quantize")
        elif isinstance(module, HashEncoding):
            wrap(module, "forward", "grid_lookup")
    try:
        yield
    finally:
        for owner, name, original in reversed(patched):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


def region_summary(prof, steps: int) -> dict:
    """Host (CPU total) milliseconds per step and calls per step of each labelled region."""
    # The profiler also records each range on the GPU's timeline (a CUDA row of the same name): host rows only.
    cpu = torch.autograd.DeviceType.CPU
    rows = {e.key: e for e in prof.key_averages() if e.key.startswith("region:") and e.device_type == cpu}
    return {
        key[len("region:") :]: {"host_ms": round(e.cpu_time_total / steps / 1000, 2), "calls": e.count // steps}
        for key, e in sorted(rows.items(), key=lambda kv: -kv[1].cpu_time_total)
    }


def warm(pipeline, optimizers, warmup: int) -> float:
    """Run ``warmup`` steps; return the seconds of the first (where compilation, if any, happens)."""
    t = time.perf_counter()
    step(pipeline, optimizers, 0)
    torch.cuda.synchronize()
    first = time.perf_counter() - t
    for i in range(1, warmup):
        step(pipeline, optimizers, i)
    torch.cuda.synchronize()
    return first


def step_times(pipeline, optimizers, start: int, count: int) -> list:
    """Seconds of each of ``count`` synchronised steps, numbered from ``start``."""
    times = []
    for i in range(start, start + count):
        t = time.perf_counter()
        step(pipeline, optimizers, i)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times


def timed(pipeline, optimizers, warmup: int, steps: int) -> tuple:
    """(median seconds per step, seconds of the first step)."""
    first = warm(pipeline, optimizers, warmup)
    return statistics.median(step_times(pipeline, optimizers, warmup, steps)), first


def interleaved(built: dict, warmup: int, steps: int, rounds: int) -> dict:
    """spec -> (median seconds per step, first step): every pipeline built first, then ``rounds`` rounds of
    ``steps // rounds`` steps each, one pipeline after the other.

    Why: on the device machine one process's figures drift by up to 25% between consecutive runs of the same code
    (2026-12-02: 42.8 then 53.5 ms), more than the differences being measured; alternating short blocks spreads the
    drift evenly over the pipelines compared, so their ratio holds.
    """
    firsts = {spec: warm(p, o, warmup) for spec, (p, o) in built.items()}
    times: dict = {spec: [] for spec in built}
    block = max(steps // rounds, 1)
    for r in range(rounds):
        for spec, (p, o) in built.items():
            times[spec] += step_times(p, o, warmup + r * block, block)
    return {spec: (statistics.median(times[spec]), firsts[spec]) for spec in built}


def main() -> None:
    import ns_bench

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="> 1: build every run first, then time them in this many alternating blocks (see interleaved)",
    )
    parser.add_argument("--rays", type=int, default=4096)
    parser.add_argument("--stock-steps", type=int, default=int(os.environ.get("STOCK_STEPS", "0")))
    parser.add_argument("--profile", action="store_true", help="print the top kernels of --profile-run")
    parser.add_argument("--profile-run", default="shacira:triton", help="the runs --profile profiles (comma-separated)")
    parser.add_argument(
        "--sync-sources",
        action="store_true",
        help="after timing each run, one step under torch's sync debug mode: where the host waits",
    )
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
    specs = {}
    for spec in args.runs:
        method, backend, *rest = spec.split(":")
        specs[spec] = (method, backend, tuple(rest[0].split("+")) if rest else ())
    results = {}
    if args.rounds > 1:  # build them all, then time them in alternating blocks
        built = {spec: build(m, args.data, b, args.rays, o) for spec, (m, b, o) in specs.items()}
        results = interleaved(built, args.warmup, args.steps, args.rounds)
    for spec, (method, backend, options) in specs.items():
        pipeline, optimizers = built[spec] if args.rounds > 1 else build(method, args.data, backend, args.rays, options)
        seconds, first = results[spec] if spec in results else timed(pipeline, optimizers, args.warmup, args.steps)
        extra = {"gather": "index_select"} if method == "nerfacto" else {}
        record(method, backend, seconds, args.steps, options=list(options), grad_scaler=True,
               first_step_s=round(first, 2), rounds=args.rounds, **extra)  # fmt: skip
        if args.profile and spec in args.profile_run.split(","):
            from torch.profiler import ProfilerActivity, profile

            with labelled_regions(pipeline), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for i in range(5):
                    step(pipeline, optimizers, 1000 + i)
                torch.cuda.synchronize()
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30), flush=True)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), flush=True)
            # The GPU's own work per step against the step's wall time: how far the host's launches bound the step.
            # (Kernel rows only; the first version of this sum also counted operator rows, 27.9 ms a step where
            # the profiler's own total said 13.7.)
            summary = ns_bench.profile_summary(prof, 5, 5 * seconds)
            print(json.dumps({"profile_run": spec, **summary, "regions": region_summary(prof, 5)}), flush=True)
        if args.sync_sources:
            print(json.dumps({"sync_sources": spec, **sync_sources(pipeline, optimizers, 2000)}), flush=True)
        if args.rounds > 1:
            built[spec] = None
        del pipeline, optimizers
        torch.cuda.empty_cache()


def sync_sources(pipeline, optimizers, i: int) -> dict:
    """The host synchronisations of one step, counted by the innermost call site outside torch (file:line).

    Why: a step bound by the host loses the GPU's lead at every sync (``.item()``, boolean masks, ``nonzero``), and
    the profiler counts them (``cudaStreamSynchronize``) without saying where they come from. torch's sync debug
    mode warns at each one; the warning's stack names the caller.
    """
    import traceback
    import warnings
    from collections import Counter

    sites: Counter = Counter()

    def note(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        frames = [
            f for f in traceback.extract_stack()[:-1] if "/torch/" not in f.filename and "warnings" not in f.filename
        ]
        site = frames[-1] if frames else None
        sites[f"{site.filename.split('site-packages/')[-1]}:{site.lineno} {site.name}" if site else str(filename)] += 1

    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = note
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(pipeline, optimizers, i)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return {"syncs_per_step": sum(sites.values()), "sites": dict(sites.most_common())}


if __name__ == "__main__":
    main()
