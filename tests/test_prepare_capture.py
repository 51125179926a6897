"""benchmarks/gpu/prepare_capture.py: the carried copy of a capture holds what nerfacto's defaults read (the frames
and an images_2 copy at half size), and bad input is a one-line error that leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / "prepare_capture.py"


def make_capture(root: Path, frames: int = 3) -> Path:
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    entries = []
    for i in range(frames):
        name = f"images/{i:04d}.jpg"
        Image.fromarray(rng.integers(0, 256, (20, 12, 3), dtype=np.uint8)).save(root / name, quality=95)
        entries.append({"file_path": name, "transform_matrix": np.eye(4).tolist()})
    meta = {"fl_x": 10.0, "fl_y": 10.0, "cx": 6.0, "cy": 10.0, "w": 12, "h": 20, "frames": entries}
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def run(*args: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_copy_has_the_frames_and_a_half_size_copy(tmp_path: Path) -> None:
    src = make_capture(tmp_path / "cap")
    result = run(src, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert json.loads((out / "transforms.json").read_text()) == json.loads((src / "transforms.json").read_text())
    for i in range(3):
        assert (out / f"images/{i:04d}.jpg").read_bytes() == (src / f"images/{i:04d}.jpg").read_bytes()
        with Image.open(out / f"images_2/{i:04d}.jpg") as small:
            assert small.size == (6, 10)


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    missing = run(tmp_path / "nowhere", tmp_path / "out")
    assert missing.returncode == 2
    assert (
        missing.stderr.strip()
        == f"error: {tmp_path / 'nowhere' / 'transforms.json'}: not found (a nerfstudio-data capture has a transforms.json)"
    )
    src = make_capture(tmp_path / "cap")
    (src / "images" / "0001.jpg").unlink()
    gap = run(src, tmp_path / "out")
    assert gap.returncode == 2 and gap.stderr.count("\n") == 1
    assert "1 frames named in transforms.json are missing" in gap.stderr
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap"]  # no temporary folder left either


def test_an_unreadable_frame_is_one_line_and_the_partial_copy_is_removed(tmp_path: Path) -> None:
    src = make_capture(tmp_path / "cap")
    (src / "images" / "0002.jpg").write_bytes(b"not a jpeg")
    result = run(src, tmp_path / "out")
    assert result.returncode == 2
    assert (
        result.stderr.strip() == f"error: {src / 'images' / '0002.jpg'}: not a readable image (UnidentifiedImageError)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap"]


def test_an_existing_destination_is_refused(tmp_path: Path) -> None:
    src = make_capture(tmp_path / "cap")
    (tmp_path / "out").mkdir()
    result = run(src, tmp_path / "out")
    assert result.returncode == 2 and "already exists" in result.stderr
    assert list((tmp_path / "out").iterdir()) == []
