"""Helpers shared by the benchmark scripts: machine description, tensorboard scalars, JSON-lines results."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> Optional[str]:
    """The CPU's model name from /proc/cpuinfo (None where there is none, e.g. not Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine() -> str:
    """One line: CPU model and cores, GPU if any, torch version."""
    cpu = cpu_model() or platform.processor() or platform.machine()
    text = f"{cpu}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name(0)}"
        text += f", torch {torch.__version__}"
    except ImportError:
        pass
    return text


def today() -> str:
    return _dt.date.today().isoformat()


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def scalars(run_dir: Path, tag: str) -> List[Tuple[int, float]]:
    """(step, value) pairs of one tensorboard scalar of a nerfstudio run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags().get("scalars", []):
        return []
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def steady_iteration_seconds(run_dir: Path, skip_fraction: float = 0.2) -> float:
    """Median of nerfstudio's 'Train Iter (time)' after the first ``skip_fraction`` of steps (warm-up)."""
    values = scalars(run_dir, "Train Iter (time)")
    if not values:
        raise RuntimeError(f"no 'Train Iter (time)' scalars in {run_dir}")
    last = values[-1][0]
    steady = sorted(v for s, v in values if s >= skip_fraction * last)
    return steady[len(steady) // 2]


def append_jsonl(name: str, rows: List[Dict]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path
