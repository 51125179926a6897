"""Time training steps of shacira and nerfacto side by side in one process, and profile shacira's step.

Both pipelines are built from their method configs (nerfstudio's `nerfacto`, our `shacira`) with the Blender
benchmark settings and the torch implementation, on the same scene and device; each runs WARMUP + STEPS
optimizer steps (forward, backward, Adam), timed with CUDA synchronisation. nerfacto's torch grid gathers through
index_select as in the RD runs (ns_bench.py); STOCK_STEPS=N (default 0) also times N steps of nerfstudio's stock
gather. Usage (GPU machine):

    python3 benchmarks/gpu/profile_step.py .gpu/lego [STEPS]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def build(method: str, data: Path, device: str):
    from nerfstudio.configs.method_configs import all_methods
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    cfg = all_methods[method]
    pipe_cfg = cfg.pipeline
    pipe_cfg.datamanager = VanillaDataManagerConfig(
        _target=VanillaDataManager, dataparser=BlenderDataParserConfig(data=data), train_num_rays_per_batch=4096
    )
    m = pipe_cfg.model
    m.implementation = "torch"
    m.background_color, m.proposal_initial_sampler = "white", "uniform"
    m.near_plane, m.far_plane, m.disable_scene_contraction = 2.0, 6.0, True
    m.camera_optimizer.mode = "off"
    m.use_average_appearance_embedding, m.distortion_loss_mult = False, 0.0
    pipeline = pipe_cfg.setup(device=device, test_mode="val")
    from nerfstudio.engine.optimizers import Optimizers

    optimizers = Optimizers(cfg.optimizers, pipeline.get_param_groups())
    return pipeline, optimizers


def step(pipeline, optimizers, i: int) -> None:
    optimizers.zero_grad_all()
    with torch.autocast("cuda", enabled=True):
        _, loss_dict, _ = pipeline.get_train_loss_dict(i)
        loss = sum(loss_dict.values())
    loss.backward()
    optimizers.optimizer_step_all()


def timed(pipeline, optimizers, warmup: int, steps: int) -> float:
    for i in range(warmup):
        step(pipeline, optimizers, i)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(pipeline, optimizers, i)
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def main() -> None:
    import ns_bench

    ns_bench.disable_lpips_if_offline()
    import shacira_nerf.nerf  # noqa: F401

    data = Path(sys.argv[1])
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    stock_steps = int(os.environ.get("STOCK_STEPS", "0"))
    results = {}
    if stock_steps > 0:
        pipeline, optimizers = build("nerfacto", data, "cuda")
        stock = timed(pipeline, optimizers, 2, stock_steps)
        print(f"nerfacto, stock gather: {1000 * stock:.1f} ms/step ({stock_steps} steps after 2 warm-up)", flush=True)
        del pipeline, optimizers
    ns_bench.use_index_select_gather()
    for method in ("nerfacto", "shacira"):
        pipeline, optimizers = build(method, data, "cuda")
        results[method] = timed(pipeline, optimizers, 20, steps)
        print(f"{method}: {1000 * results[method]:.1f} ms/step ({steps} steps after 20 warm-up)", flush=True)
        if method == "shacira" and os.environ.get("PROFILE", "1") == "1":
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for i in range(5):
                    step(pipeline, optimizers, 1000 + i)
                torch.cuda.synchronize()
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        del pipeline, optimizers
        torch.cuda.empty_cache()
    print(f"ratio shacira/nerfacto: {results['shacira'] / results['nerfacto']:.2f}x")


if __name__ == "__main__":
    main()
