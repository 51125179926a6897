"""`ns-train` for stock nerfstudio methods on an offline machine, for speed benchmarks only.

Stock nerfacto builds LPIPS when the model is constructed, which downloads AlexNet's weights and fails offline.
This launcher replaces the metric class with one that refuses to compute (it raises if an evaluation ever calls
it), so training-speed benchmarks can run with evaluations turned off. No weights are faked.

    python benchmarks/offline_ns_train.py nerfacto --data ... [ns-train arguments]
"""

from __future__ import annotations

import sys

import torch


class _NoLPIPS(torch.nn.Module):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__()

    def forward(self, *args, **kwargs):
        raise RuntimeError("LPIPS is unavailable offline (benchmark launcher); disable evaluations")


def main() -> None:
    from torchmetrics.image import lpip

    lpip.LearnedPerceptualImagePatchSimilarity = _NoLPIPS  # nerfacto imports it from here at model construction
    from nerfstudio.scripts.train import entrypoint

    sys.argv[0] = "ns-train"
    entrypoint()


if __name__ == "__main__":  # nerfstudio's data workers re-import this file when they spawn
    main()
