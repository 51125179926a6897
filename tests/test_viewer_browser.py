"""A real browser on nerfstudio's viewer during `ns-train shacira-tiny`: the size panel shows a number.

Headless Chromium (Debian's package, driven by Playwright's Python API; no browser download) opens the viewer of a
short training run on localhost and reads the compression panel; a screenshot is saved in the test's temp folder.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SCENE

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(f"ns-train exited early with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(1)
    raise AssertionError(f"viewer did not open port {port} in {timeout} s")


def _panel_value(page, pattern: str, timeout: float) -> str:
    """The first text field of the viewer whose value matches ``pattern`` (polling; "" if none in time)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for v in page.eval_on_selector_all("input", "els => els.map(e => e.value)"):
            if re.search(pattern, v):
                return v
        time.sleep(2)
    return ""


def _read_panel(port: int, proc: subprocess.Popen, pattern: str, screenshot: Path) -> str:
    """Open the viewer at ``port`` in headless Chromium, read the panel value, save a screenshot; stop ``proc``."""
    playwright = pytest.importorskip("playwright.sync_api")
    try:
        _wait_for_port(port, proc, 300)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}", wait_until="domcontentloaded")
            value = _panel_value(page, pattern, 240)
            time.sleep(3)  # let a first frame render before the screenshot
            page.screenshot(path=str(screenshot), full_page=True)
            browser.close()
        return value
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (.ci/install installs it)")
def test_viewer_shows_live_size_panel(tmp_path: Path, env) -> None:
    port = _free_port()
    args = [
        "ns-train", "shacira-tiny", "--data", str(SCENE), "--max-num-iterations", "100000",
        "--vis", "viewer", "--viewer.websocket-port", str(port), "--viewer.websocket-host", "127.0.0.1",
        "--pipeline.model.size-update-every", "10", "--output-dir", str(tmp_path / "out"),
    ]  # fmt: skip
    with open(tmp_path / "train.log", "w") as log:
        proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        value = _read_panel(port, proc, r"\d+\.\d+ MB \(estimate at step \d+\)", tmp_path / "viewer.png")
    assert value, f"no size estimate in the viewer panel; screenshot: {tmp_path / 'viewer.png'}"
    assert float(value.split()[0]) > 0
    assert (tmp_path / "viewer.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (.ci/install installs it)")
def test_shacira_view_opens_the_file_alone(exported_scene: Path, tmp_path: Path, env) -> None:
    """`shacira view` on a copy of the file in an empty folder: the viewer runs and shows the file's true size."""
    alone = tmp_path / "scene.shac"
    shutil.copy(exported_scene, alone)
    port = _free_port()
    with open(tmp_path / "view.log", "w") as log:
        proc = subprocess.Popen(
            ["shacira", "view", str(alone), "--port", str(port), "--max-seconds", "300"],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        value = _read_panel(port, proc, r"MB \(file: [\d,]+ bytes\)", tmp_path / "view.png")
    assert f"{alone.stat().st_size:,} bytes" in value, value
