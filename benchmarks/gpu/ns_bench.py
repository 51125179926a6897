"""Run `ns-train` / `ns-eval` for the benchmarks, offline, with nerfacto's torch hash grid made usable on a GPU.

    python3 benchmarks/gpu/ns_bench.py train|eval [the usual ns-train / ns-eval arguments]

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


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ENTRYPOINTS:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(ENTRYPOINTS)} [nerfstudio arguments]")
    command = sys.argv.pop(1)
    sys.argv[0] = f"ns-{command}"
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    disable_lpips_if_offline()
    if os.environ.get("SHACIRA_BENCH_GATHER", "index_select") == "index_select":
        use_index_select_gather()
    importlib.import_module(ENTRYPOINTS[command]).entrypoint()


if __name__ == "__main__":  # guard: nerfstudio's data workers re-import this file when they spawn
    main()
