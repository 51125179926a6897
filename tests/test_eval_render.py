"""nerfstudio's own commands on a shacira run, offline on CPU: ns-eval (with the size) and ns-render."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import REPO, run_cli


def test_ns_eval_reports_quality_and_size_offline(short_run: Path, exported_scene: Path, tmp_path: Path, env) -> None:
    out = tmp_path / "eval.json"
    result = run_cli(["ns-eval", "--load-config", str(short_run / "config.yml"), "--output-path", str(out)], env, REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(out.read_text())["results"]
    assert 5 < metrics["psnr"] < 60 and 0 < metrics["ssim"] <= 1
    # No AlexNet weights in the (empty) torch cache: LPIPS is left out, and the JSON says why.
    assert "lpips" not in metrics
    assert "not computed" in metrics["lpips_note"]
    # The size is the real file's byte length (the same bytes `shacira export` wrote), with the estimate beside it.
    assert metrics["size_bytes"] == exported_scene.stat().st_size
    assert metrics["estimate_size_MB"] > 0


def test_ns_render_two_frames_on_cpu(short_run: Path, tmp_path: Path, env) -> None:
    c2w = np.eye(4)
    c2w[:3, :3] = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]]).T
    c2w[:3, 3] = [0.0, -4.0, 0.0]
    frame = {"camera_to_world": c2w.flatten().tolist(), "fov": 50.0, "aspect": 1.0}
    spec = {"render_height": 24, "render_width": 24, "seconds": 1.0, "fps": 2, "camera_type": "perspective",
            "camera_path": [frame, frame]}  # fmt: skip
    path = tmp_path / "path.json"
    path.write_text(json.dumps(spec))
    video = tmp_path / "render.mp4"
    result = run_cli(
        ["ns-render", "camera-path", "--load-config", str(short_run / "config.yml"), "--camera-path-filename",
         str(path), "--output-path", str(video)], env, REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert video.stat().st_size > 0
    frames = tmp_path / "frames"
    result = run_cli(
        ["ns-render", "camera-path", "--load-config", str(short_run / "config.yml"), "--camera-path-filename",
         str(path), "--output-path", str(frames), "--output-format", "images"], env, REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(frames.glob("*.jpg")) + list(frames.glob("*.png"))) == 2
