"""`ns-train shacira-tiny` through nerfstudio's trainer: checkpoints, falling loss, the rate term, the built model."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Dict

import pytest
import torch
from conftest import REPO, SCENE, run_cli

from shacira_nerf.core.grid import ShaciraGrid


def _scalars(run: Path, tag: str):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_tiny_preset_trains_and_writes_a_checkpoint(short_run: Path) -> None:
    ckpts = sorted((short_run / "nerfstudio_models").glob("step-*.ckpt"))
    assert ckpts and ckpts[-1].name == "step-000000029.ckpt"
    loss = _scalars(short_run, "Train Loss")
    assert len(loss) >= 3
    assert loss[-1][1] < loss[0][1]
    rgb = _scalars(short_run, "Train Loss Dict/rgb_loss")
    assert rgb[-1][1] < rgb[0][1]


def test_training_logs_the_size_estimate(trained_runs: Dict[str, Path]) -> None:
    """Every logged estimate is a size: bits >= 0, networks and cameras > 0, total = latents + networks + cameras;
    bits leave 0 later.

    Early in training every latent of a dimension rounds to one value, which costs 0 bits; the estimate's two sums
    then cancel, and before the clamp float rounding left them at -1.1e-7 on some machines and +1e-7 on others.
    """
    names = ("size_MB", "bits_per_latent", "latent_MB", "network_MB", "camera_MB")
    for run in ("short", "lam0"):
        logged = {name: _scalars(trained_runs[run], f"Train Metrics Dict/estimate_{name}") for name in names}
        steps = [step for step, _ in logged["size_MB"]]
        assert len(steps) >= 2 and all([step for step, _ in values] == steps for values in logged.values())
        for (_, size), (_, bits), (_, latent), (_, network), (_, camera) in zip(*logged.values()):
            assert 0 <= bits < 32 and latent >= 0  # a latent never costs more than a float32
            assert 0 < network < 10 and 0 < camera < 1
            assert size == pytest.approx(latent + network + camera, rel=1e-6)  # tensorboard stores float32
    # Once the latents have spread (after 50 steps without the rate term), coding them costs bits.
    assert logged["bits_per_latent"][-1][1] > 0.5, logged["bits_per_latent"]


def test_rate_term_trains_the_latents(trained_runs: Dict[str, Path]) -> None:
    """Same seed, lambda = 0 vs lambda > 0: the rate (bits of the rounded latents) ends clearly lower with lambda."""
    from nerfstudio.utils.eval_utils import eval_setup

    bits = {}
    for name in ("lam0", "lam"):
        _, pipeline, _, _ = eval_setup(trained_runs[name] / "config.yml", test_mode="inference")
        bits[name] = pipeline.model.estimate_size()["bits_per_latent"]
    assert bits["lam"] < 0.8 * bits["lam0"], bits
    rate = {name: _scalars(trained_runs[name], "Train Metrics Dict/rate_bits_per_latent") for name in ("lam0", "lam")}
    assert rate["lam"][-1][1] < rate["lam0"][-1][1]


def test_every_hash_grid_is_a_shacira_grid(loaded_checkpoint) -> None:
    from nerfstudio.field_components.encodings import HashEncoding

    model = loaded_checkpoint.model
    assert isinstance(model.field.mlp_base[0], ShaciraGrid)
    assert len(model.proposal_networks) == model.config.num_proposal_iterations == 2
    for net in model.proposal_networks:
        assert isinstance(net.encoding, ShaciraGrid) and isinstance(net.mlp_base[0], ShaciraGrid)
    grids = [m for m in model.modules() if isinstance(m, ShaciraGrid)]
    assert len({id(g) for g in grids}) == 3
    assert not [m for m in model.modules() if isinstance(m, HashEncoding)]
    names = [n for n, _ in model.named_parameters()]
    assert not [n for n in names if "hash_table" in n]


def test_checkpoint_reloads_under_torch_weights_only(short_run: Path) -> None:
    """nerfstudio 1.1.5 calls torch.load without weights_only; the plugin makes its checkpoints load safely."""
    import shacira_nerf.nerf  # noqa: F401 - registers the numpy globals

    ckpt = sorted((short_run / "nerfstudio_models").glob("*.ckpt"))[-1]
    state = torch.load(ckpt, map_location="cpu")  # torch >= 2.6: weights_only=True by default
    assert "pipeline" in state and state["step"] == 29


@pytest.mark.parametrize(
    "flag,value,field",
    [
        ("--pipeline.model.rate-lambda", "-1", "rate_lambda"),
        ("--pipeline.model.latent-dim", "0", "latent_dim"),
        ("--pipeline.model.implementation", "cuda-magic", "implementation"),
        ("--pipeline.model.quantizer", "stochastic", "quantizer"),
    ],
)
def test_bad_config_values_fail_at_start_naming_the_field(flag: str, value: str, field: str, env, tmp_path) -> None:
    result = run_cli(
        ["ns-train", "shacira-tiny", "--data", str(SCENE), flag, value, "--output-dir", str(tmp_path)], env, REPO, 300
    )
    assert result.returncode != 0
    assert f"pipeline.model.{field}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_methods_are_registered() -> None:
    result = subprocess.run(["ns-train", "--help"], capture_output=True, text=True, timeout=300)
    assert "shacira-tiny" in result.stdout and "shacira " in result.stdout


def test_a_resumed_run_anneals_and_finishes_over_its_whole_length(env, tmp_path: Path) -> None:
    """Resuming (--load-dir, then --max-num-iterations more steps, as benchmarks/gpu/train_eval.sh does) keeps the
    annealing schedule and the last-step finish on the whole run: after 10 + 10 steps the quantizer stands at step
    19 of 20 and the saved networks are float16 numbers (rounded after the last step of the run, not of a segment)."""
    from conftest import ns_train_args

    import shacira_nerf.nerf  # noqa: F401 - registers the numpy globals

    first = run_cli(ns_train_args(tmp_path, "resume", 10, "--steps-per-save", "10"), env, REPO, 600)
    assert first.returncode == 0, first.stderr[-2000:]
    models = tmp_path / "toy" / "shacira-tiny" / "resume" / "nerfstudio_models"
    second = run_cli(ns_train_args(tmp_path, "resume", 10, "--load-dir", str(models)), env, REPO, 600)
    assert second.returncode == 0, second.stderr[-2000:]
    state = torch.load(models / "step-000000019.ckpt", map_location="cpu")["pipeline"]
    assert float(state["_model.quantizer.progress"]) == pytest.approx(19 / 20)
    head = state["_model.field.mlp_head.layers.0.weight"]
    assert torch.equal(head.half().float(), head)
