"""The Kodak benchmark's classical-codec curves (benchmarks/image_kodak.py, benchmarks/kodak_replot.py): JPEG2000 points
come from real codestream bytes, and interpolation refuses to extrapolate."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import features

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import image_kodak as ik  # noqa: E402
import kodak_replot as kr  # noqa: E402


def smooth_image(h: int = 48, w: int = 64) -> np.ndarray:
    """A gradient per channel plus a little noise, uint8 HxWx3."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = np.stack([255 * x / (w - 1), 255 * y / (h - 1), 127 + 100 * np.sin((x + y) / 9)], axis=-1)
    noise = np.random.default_rng(0).normal(0, 4, rgb.shape)
    return np.clip(np.round(rgb + noise), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def j2k_curve() -> list:
    if not features.check("jpg_2000"):
        pytest.skip("Pillow without OpenJPEG (jpg_2000)")
    return ik.codec_curve(smooth_image(), "JPEG2000", (0.5, 1.0, 2.0, 4.0))


def test_jpeg2000_points_are_real_bytes(j2k_curve: list) -> None:
    pixels = 48 * 64
    assert [p["target_bpp"] for p in j2k_curve] == [0.5, 1.0, 2.0, 4.0]
    for p in j2k_curve:
        assert p["bytes"] > 0 and p["bpp"] == 8.0 * p["bytes"] / pixels
        assert math.isfinite(p["psnr"])
    assert j2k_curve[-1]["psnr"] > j2k_curve[0]["psnr"]
    assert j2k_curve[-1]["bytes"] > j2k_curve[0]["bytes"]


def test_jpeg2000_records_use_rate_settings(j2k_curve: list) -> None:
    assert ik.codec_setting(j2k_curve[1]) == "rate=1"
    assert ik.codec_setting({"quality": 50}) == "q=50"
    assert "jpeg2000" in ik.codec_curves(smooth_image(16, 16), quick=True, only=["jpeg2000"])


def test_psnr_at_bpp_is_none_outside_the_range(j2k_curve: list) -> None:
    lo = min(p["bpp"] for p in j2k_curve)
    hi = max(p["bpp"] for p in j2k_curve)
    assert ik.psnr_at_bpp(j2k_curve, lo / 2) is None
    assert ik.psnr_at_bpp(j2k_curve, hi * 2) is None
    mid = ik.psnr_at_bpp(j2k_curve, (lo + hi) / 2)
    assert mid is not None and min(p["psnr"] for p in j2k_curve) <= mid <= max(p["psnr"] for p in j2k_curve)


def test_mean_curve_interpolation_brackets() -> None:
    points = [(0.3, 30.0), (0.1, 26.0), (0.2, 28.0)]
    assert ik.interpolate(points, 0.25) == pytest.approx(29.0)
    assert ik.interpolate(points, 0.05) is None and ik.interpolate(points, 0.31) is None


def test_missing_results_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        kr.main(["--results", str(tmp_path / "none.jsonl"), "--kodak", str(tmp_path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'none.jsonl'}: no such file"
