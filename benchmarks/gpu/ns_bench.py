"""Run `ns-train` / `ns-eval` for the benchmarks, offline, with nerfacto's torch hash grid made usable on a GPU.

    python3 benchmarks/gpu/ns_bench.py train|eval [the usual ns-train / ns-eval arguments]
    python3 benchmarks/gpu/ns_bench.py run OUT NAME [the usual ns-train arguments]

``NS_PROFILE=START,COUNT`` (train and run): torch's profiler over COUNT whole iterations of nerfstudio's training loop
from the START-th (the trainer's callbacks, writer and data loading included, which ``step_time.py`` leaves out):
the busiest operators and a JSON line with the wall time, the GPU's kernel time and the kernel count per step.

``run`` trains, then evaluates the trained pipeline on every evaluation view, exports a shacira run's scene file and
appends the run's summary line to ``OUT/runs.jsonl``, all in the one process. On the device machine a process
started by a background job after its call has returned cannot load torch, so a background run must not start
ns-eval or ``shacira export`` as new processes: ``run`` reuses the trainer's pipeline instead (nerfstudio's
``Pipeline.get_average_eval_image_metrics``, what ns-eval computes, on the datamanager's evaluation split, which the
prepared Blender scenes point at their test views; and the same encoder as ``shacira export``).

Three things, each because stock nerfstudio 1.1.5 cannot run the benchmark otherwise on the device machine:

1. **LPIPS offline.** nerfacto builds torchmetrics' LPIPS at model construction, which downloads AlexNet's weights.
   Unless they are already in torch's cache, the metric class is replaced by one that returns NaN, so ns-eval
   reports PSNR/SSIM and no LPIPS (the benchmark records null). No weights are made up.
2. **Checkpoint reload.** nerfstudio calls `torch.load` without `weights_only`; torch >= 2.6 then refuses nerfacto's
   checkpoints (numpy scalars in them), so ns-eval and `--load-dir` (resume) fail. TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1
   is set: these are checkpoints this benchmark wrote itself.
3. **nerfacto's torch hash-grid gather** (unless SHACIRA_BENCH_GATHER=index) reads its table through
   `torch.index_select` instead of advanced indexing. Same rows, bit-identical forward values; the backward becomes an
   `index_add` (atomic adds) instead of `index_put(accumulate=True)`, whose CUDA kernel serialises on repeated
   rows. With the Blender flags (no scene contraction) every sample outside the box is moved to the origin, so
   millions of samples gather the same rows, and the stock gather takes about 1 s per step on an H200. Our own
   torch grid (shacira) gathers with `index_select` too, so both methods run the same kind of kernel.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import torch

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ENTRYPOINTS = {"train": "nerfstudio.scripts.train", "eval": "nerfstudio.scripts.eval"}


class NaNLPIPS(torch.nn.Module):
    """Stands in for torchmetrics' LPIPS when its AlexNet weights are not cached: every value is NaN."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.full((), float("nan"), device=preds.device)


class IndexSelectTable(torch.nn.Parameter):
    """A hash table whose integer-tensor gathers go through `index_select` (backward: atomic `index_add`)."""

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, torch.Tensor) and not index.is_floating_point() and index.dtype != torch.bool:
            rows = torch.index_select(self, 0, index.reshape(-1))
            return rows.view(*index.shape, *self.shape[1:])
        return super().__getitem__(index)


def use_index_select_gather() -> None:
    """Patch nerfstudio's HashEncoding so every torch-path table it builds is an IndexSelectTable."""
    from nerfstudio.field_components.encodings import HashEncoding

    build = HashEncoding.build_nn_modules

    def build_nn_modules(self: HashEncoding) -> None:
        build(self)
        if isinstance(self.hash_table, torch.nn.Parameter) and self.hash_table.numel() > 0:
            self.hash_table = IndexSelectTable(self.hash_table.data)

    HashEncoding.build_nn_modules = build_nn_modules


def alexnet_weights_cached() -> bool:
    return os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", ALEXNET_FILE))


def disable_lpips_if_offline() -> None:
    if alexnet_weights_cached():
        return
    import torchmetrics.image.lpip as lpip_module

    lpip_module.LearnedPerceptualImagePatchSimilarity = NaNLPIPS  # nerfacto imports it from here, lazily
    print(f"[ns_bench] {ALEXNET_FILE} not cached: LPIPS is NaN (not measured)", file=sys.stderr)


def profile_summary(prof: Any, steps: int, wall_seconds: float) -> dict:
    """Per step: the wall time, the GPU's own kernel time and the kernel count of a profiled stretch. Kernel rows
    only: an operator's row repeats the time of the kernels it launched."""
    # ``record_function`` ranges (step_time.py's "region:" labels) also get CUDA rows spanning their kernels: not
    # kernels, left out.
    kernels = [
        e for e in prof.key_averages()
        if e.device_type == torch.autograd.DeviceType.CUDA and not e.key.startswith(("region:", "ProfilerStep"))
    ]  # fmt: skip
    return {"steps": steps, "wall_ms_per_step": round(1000 * wall_seconds / steps, 2),
            "gpu_busy_ms_per_step": round(sum(e.self_device_time_total for e in kernels) / steps / 1000, 2),
            "gpu_kernels_per_step": sum(e.count for e in kernels) // steps}  # fmt: skip


def profile_training_loop(start: int, count: int) -> None:
    """Profile iterations [start, start + count) of nerfstudio's training loop, from one ``train_iteration`` call to
    the one ``count`` later (so everything the loop does between them is inside), and print the result."""
    import json
    import time

    from nerfstudio.engine.trainer import Trainer
    from torch.profiler import ProfilerActivity, profile

    inner = Trainer.train_iteration
    state: dict = {"calls": 0}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def train_iteration(self: Trainer, step: int) -> Any:
        k = state["calls"]
        state["calls"] += 1
        if k == start:
            sync()
            state["prof"] = profile(activities=activities)
            state["prof"].__enter__()
            state["t0"] = time.perf_counter()
        elif k == start + count and "prof" in state:
            sync()
            wall = time.perf_counter() - state["t0"]
            prof = state.pop("prof")
            prof.__exit__(None, None, None)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)
            print("[ns_bench] NS_PROFILE " + json.dumps(profile_summary(prof, count, wall)), file=sys.stderr)
        return inner(self, step)

    Trainer.train_iteration = train_iteration


def train_keeping_trainer(argv: list) -> Any:
    """Run ns-train's own entry point on ``argv`` and return its Trainer after ``train()`` has returned."""
    from nerfstudio.engine.trainer import Trainer

    trained = []
    train = Trainer.train

    def train_and_keep(self: Trainer) -> None:
        train(self)
        trained.append(self)

    Trainer.train = train_and_keep
    sys.argv = ["ns-train", *argv]
    importlib.import_module(ENTRYPOINTS["train"]).entrypoint()
    Trainer.train = train
    return trained[0]


def evaluate_on_test_split(pipeline: Any) -> None:
    """Point a training pipeline's evaluation at the test split, as ns-eval's does (``eval_setup`` builds its
    datamanager in test mode; training builds it in val mode), loading the views in this process (no workers)."""
    from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader

    dm = pipeline.datamanager
    if getattr(dm, "test_split", "test") == "test":
        return
    dm.test_split = "test"
    dm.eval_dataset = dm.create_eval_dataset()
    dm.fixed_indices_eval_dataloader = FixedIndicesEvalDataloader(
        input_dataset=dm.eval_dataset, device=dm.device, num_workers=0
    )


def run(out: str, name: str, argv: list) -> None:
    """Train, evaluate, export and summarise one run in this process (see the module's docstring)."""
    import json
    import time
    from pathlib import Path

    from summary import summarize

    os.makedirs(out, exist_ok=True)
    method = argv[0]
    t0 = time.time()
    trainer = train_keeping_trainer(argv)
    wall = time.time() - t0
    pipeline, run_dir = trainer.pipeline, trainer.base_dir
    torch.cuda.empty_cache()
    evaluate_on_test_split(pipeline)
    sampler = getattr(pipeline.model, "proposal_sampler", None)
    if sampler is not None:  # nerfacto's proposal-weight annealing is not saved: a reloaded model has 1 (its end)
        sampler.set_anneal(1.0)
    t1 = time.time()
    metrics = pipeline.get_average_eval_image_metrics(get_std=True)
    views = len(pipeline.datamanager.eval_dataset)
    print(f"[ns_bench] {name}: evaluated {views} views in {time.time() - t1:.0f} s: {metrics}", file=sys.stderr)
    ckpt = sorted((run_dir / "nerfstudio_models").glob("step-*.ckpt"))[-1]
    with open(f"{out}/{name}.eval.json", "w") as f:
        json.dump({"experiment_name": trainer.config.experiment_name, "method_name": method,
                   "checkpoint": str(ckpt), "results": metrics}, f, indent=2)  # fmt: skip
    if method.startswith("shacira"):
        from shacira_nerf.codec import read_file_bytes
        from shacira_nerf.nerf.commands import export_pipeline
        from shacira_nerf.report import file_report

        n, _ = export_pipeline(pipeline, run_dir / "config.yml", Path(f"{out}/{name}.shac"))
        with open(f"{out}/{name}.info.json", "w") as f:
            json.dump(file_report(read_file_bytes(f"{out}/{name}.shac")), f, indent=2)
        print(f"[ns_bench] {name}: exported {n:,} bytes", file=sys.stderr)
    command = " ".join(["python3", os.path.abspath(__file__), "train", *argv])
    row = summarize(str(run_dir), out, name, method, trainer.config.max_num_iterations, wall, command)
    row["eval_views"] = views
    with open(f"{out}/runs.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"[{name}] done: {json.dumps(row)[:300]}", file=sys.stderr)


def main() -> None:
    verbs = [*ENTRYPOINTS, "run"]
    if len(sys.argv) < 2 or sys.argv[1] not in verbs or (sys.argv[1] == "run" and len(sys.argv) < 5):
        sys.exit(
            f"usage: {sys.argv[0]} {'|'.join(ENTRYPOINTS)} [nerfstudio arguments] | run OUT NAME [ns-train arguments]"
        )
    command = sys.argv.pop(1)
    sys.argv[0] = f"ns-{command}"
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    disable_lpips_if_offline()
    if os.environ.get("SHACIRA_BENCH_GATHER", "index_select") == "index_select":
        use_index_select_gather()
    if os.environ.get("NS_PROFILE") and command != "eval":
        start, count = (int(v) for v in os.environ["NS_PROFILE"].split(","))
        profile_training_loop(start, count)
    if command == "run":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # summary.py beside this file
        run(sys.argv[1], sys.argv[2], sys.argv[3:])
    else:
        importlib.import_module(ENTRYPOINTS[command]).entrypoint()


if __name__ == "__main__":  # guard: nerfstudio's data workers re-import this file when they spawn
    main()
