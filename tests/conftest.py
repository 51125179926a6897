"""Shared fixtures: real `ns-train shacira-tiny` runs on the bundled scene, started once per test session.

Three short trainings run in parallel through nerfstudio's own trainer (a subprocess each, as a user runs them):
- ``short``: the preset for 30 iterations (the checkpoint most tests load, export and render);
- ``lam0`` / ``lam``: the same seed with the rate term off and on, for the test that the rate trains the latents.
Everything runs offline on CPU with an empty torch cache (no AlexNet weights), as on CI.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

# Triton's interpreter runs the kernels of tests/test_lookup.py on CPUs. It is set here, before anything imports
# Triton (torch.compiler.disable, used in core, imports torch._dynamo and with it Triton and torch's own Triton
# kernels; kernels defined before the variable is set are not interpreted). Subprocesses, which run as a user's
# machine does, do not inherit it (``offline_env``).
_INTERPRET_SET_HERE = "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available()
if _INTERPRET_SET_HERE:
    os.environ["TRITON_INTERPRET"] = "1"

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO / "data" / "shacira-toy"
RATE_TEST_ITERATIONS = 80
RATE_TEST_LAMBDA = 0.05


def offline_env(torch_home: Path) -> Dict[str, str]:
    env = dict(os.environ)
    if _INTERPRET_SET_HERE:
        env.pop("TRITON_INTERPRET", None)
    env.update(
        CUDA_VISIBLE_DEVICES="",
        TORCH_HOME=str(torch_home),
        WANDB_MODE="disabled",
        PYTHONWARNINGS="ignore",
        NO_COLOR="1",
        COLUMNS="200",
    )
    return env


def run_cli(args: List[str], env: Dict[str, str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def ns_train_args(out: Path, timestamp: str, iterations: int, *extra: str) -> List[str]:
    return [
        "ns-train", "shacira-tiny", "--data", str(SCENE), "--max-num-iterations", str(iterations),
        "--vis", "tensorboard", "--output-dir", str(out), "--experiment-name", "toy", "--timestamp", timestamp,
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty torch cache: LPIPS weights are absent, as on a fresh offline machine."""
    return tmp_path_factory.mktemp("torch_home")


@pytest.fixture(scope="session")
def env(torch_home: Path) -> Dict[str, str]:
    return offline_env(torch_home)


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory: pytest.TempPathFactory, env: Dict[str, str]) -> Dict[str, Path]:
    out = tmp_path_factory.mktemp("outputs")
    jobs = {
        "short": ns_train_args(out, "short", 30),
        "lam0": ns_train_args(out, "lam0", RATE_TEST_ITERATIONS, "--pipeline.model.rate-lambda", "0"),
        "lam": ns_train_args(out, "lam", RATE_TEST_ITERATIONS, "--pipeline.model.rate-lambda", str(RATE_TEST_LAMBDA)),
    }
    # One thread each: three processes share the CPU cores without oversubscribing them (torch's OpenMP threads
    # spin-wait, and oversubscription slows each step several-fold).
    single = {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = {}
    for name, args in jobs.items():
        log = open(out / f"{name}.log", "w")
        procs[name] = (subprocess.Popen(args, env=single, cwd=out, stdout=log, stderr=subprocess.STDOUT), log)
    runs = {}
    for name, (proc, log) in procs.items():
        rc = proc.wait(timeout=1200)
        log.close()
        text = (out / f"{name}.log").read_text()
        assert rc == 0, f"ns-train {name} failed (exit {rc}):\n{text[-4000:]}"
        runs[name] = out / "toy" / "shacira-tiny" / name
    runs["root"] = out
    return runs


@pytest.fixture(scope="session")
def short_run(trained_runs: Dict[str, Path]) -> Path:
    return trained_runs["short"]


@pytest.fixture(scope="session")
def exported_scene(short_run: Path, env: Dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`shacira export` of the short run, through the console script."""
    path = tmp_path_factory.mktemp("export") / "scene.shac"
    result = run_cli(
        ["shacira", "export", "--load-config", str(short_run / "config.yml"), "--output-path", str(path)], env, REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return path


@pytest.fixture(scope="session")
def loaded_checkpoint(short_run: Path):
    """The short run's pipeline, loaded by nerfstudio's eval_setup on CPU (torch >= 2.6 checkpoint reload)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, ckpt, step = eval_setup(short_run / "config.yml", test_mode="inference")
    return pipeline


PYTHON = sys.executable


def small_scene_model(**settings):  # noqa: ANN003, ANN201
    """A small ShaciraModel on the torch lookup, built without data (4 levels, 2^10 rows; proposal grids of 3 levels,
    2^8 rows), with random integer latents and perturbed networks, so every section of its file is a real one.
    ``settings`` override ShaciraModelConfig fields."""
    from nerfstudio.data.scene_box import SceneBox

    from shacira_nerf.nerf.model import ShaciraModelConfig

    proposal = {"hidden_dim": 8, "log2_hashmap_size": 8, "num_levels": 3, "max_res": 32, "use_linear": False}
    defaults = dict(num_levels=4, log2_hashmap_size=10, max_res=64, hidden_dim=16, hidden_dim_color=16,
                    proposal_net_args_list=[dict(proposal), dict(proposal)], implementation="torch")  # fmt: skip
    config = ShaciraModelConfig(**{**defaults, **settings})
    config.camera_optimizer.mode = "off"
    torch.manual_seed(0)
    model = config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1, metadata={})
    with torch.no_grad():
        for grid in model.grids.values():
            grid.latents.values.copy_(torch.randint(-3, 4, grid.latents.values.shape).float())
        for p in model.stored_network_tensors().values():
            p.add_(torch.randn_like(p) * 0.05)  # no zero biases: every tensor a real grid
    return model


def pytest_configure(config: pytest.Config) -> None:
    """The plugin's known third-party warnings stay hidden in tests too (pytest resets the filters for each test)."""
    from shacira_nerf.warnings_filter import KNOWN_WARNINGS

    for known in KNOWN_WARNINGS:
        message, module = re.escape(known.message), re.escape(known.module)
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{known.category.__name__}:{module}\\Z")
