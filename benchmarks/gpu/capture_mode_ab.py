"""Does another thread's CUDA work break a step's capture? The GPU test
``test_a_capture_survives_another_threads_cuda_calls`` run twice on a CUDA machine: with the captures in
"thread_local" mode (``step_graph.make_graphed_thread_local``, the default) and in CUDA's "global" mode (torch's
``make_graphed_callables`` as it comes), each in a fresh process (a failed capture leaves torch's CUDA generator
unusable for the rest of its process).

    python3 -P benchmarks/gpu/capture_mode_ab.py            # both, one line each
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def one(mode: str) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    import torch

    from shacira_nerf.nerf import step_graph

    if mode == "global":
        step_graph.make_graphed_thread_local = lambda function, sample_args: torch.cuda.make_graphed_callables(
            function, sample_args, allow_unused_input=True
        )
    import test_step_graph

    try:
        test_step_graph.test_a_capture_survives_another_threads_cuda_calls()
        print(f"{mode}: the capture succeeded")
    except Exception as exc:  # noqa: BLE001 - the outcome is the measurement
        print(f"{mode}: failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        one(sys.argv[1])
    else:
        for mode in ("thread_local", "global"):
            out = subprocess.run([sys.executable, "-P", __file__, mode], capture_output=True, text=True, timeout=300)
            lines = [line for line in out.stdout.splitlines() if line.startswith(mode)]
            print(lines[-1] if lines else f"{mode}: no result (exit {out.returncode}): {out.stderr.strip()[-300:]}")
