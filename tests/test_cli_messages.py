"""The `shacira` command as a user meets it: help for every verb, one error form naming the file, safe writes.

Everything runs the real console script (or, for the write checks, the harness's forked CLI) on files made here; no
training is needed.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import List, Optional

import pytest
from conftest import offline_env
from test_crafted_files import craft, run_harness, set_path, valid_image, valid_scene, with_header_text

from shacira_nerf.codec import decode_container


def _run(args: List[str], cwd: Path, memory_bytes: Optional[int] = None, timeout: float = 180):
    def limit() -> None:
        if memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    env = {**offline_env(cwd / ".torch"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(["shacira", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, preexec_fn=limit)  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("files")
    (folder / "scene.shac").write_bytes(valid_scene())
    (folder / "image.shac").write_bytes(valid_image())
    (folder / "notes.shac").write_text("just some text\n")
    with zipfile.ZipFile(folder / "model.ckpt", "w") as archive:
        archive.writestr("step-000029999/data.pkl", b"\x80\x02}q\x00.")
    return folder


def test_help_lists_every_verb_and_describes_image_and_render(files: Path) -> None:
    top = _run(["--help"], files)
    assert top.returncode == 0, top.stderr[-2000:]
    assert "{export,info,render,view,image}" in top.stdout
    image = _run(["image", "--help"], files)
    assert image.returncode == 0 and "{compress,decompress,grid}" in image.stdout
    assert "Compress an image into a .shac file" in image.stdout  # the description line
    render = _run(["render", "--help"], files)
    assert render.returncode == 0 and "00000.png" in render.stdout and "training cameras" in render.stdout


def test_errors_have_one_form_that_names_the_file(files: Path) -> None:
    cases = [
        (["info", "missing.shac"], "error: missing.shac: no such file"),
        (["info", "notes.shac"], "error: notes.shac: not a shacira file (bad magic bytes)"),
        (["info", "."], "error: .: is a folder, not a .shac file"),
        (["info", "model.ckpt"], "error: model.ckpt: not a shacira file: this looks like a PyTorch/nerfstudio "
                                 "checkpoint (.ckpt, a zip archive); run `shacira export` to make a .shac file"),
        (["render", "image.shac"], "error: image.shac: not a scene file: it holds \"image\" (an image: use `shacira "
                                   "image decompress`)"),  # fmt: skip
        (["image", "decompress", "scene.shac", "out.png"], 'error: scene.shac: not an image file: it holds '
                                                           '"nerfstudio-scene" (a scene: use `shacira render` or '
                                                           "`shacira view`)"),  # fmt: skip
        (["export", "--load-config", "nope.yml", "--output-path", "x.shac"],
         "error: --load-config nope.yml: no such file (expected outputs/<scene>/shacira*/<run>/config.yml)"),
    ]  # fmt: skip
    for args, line in cases:
        result = _run(args, files)
        assert result.returncode == 1, (args, result.stderr[-2000:])
        assert result.stderr.strip() == line, (args, result.stderr[-2000:])
    assert not (files / "out.png").exists() and not (files / "x.shac").exists()


def test_console_script_refuses_hostile_files_under_a_memory_limit(files: Path) -> None:
    """The real entry point (not the harness): a header bomb through the torch-free `info` under a 1 GiB address
    space, and a file whose settings ask for a 2^30-number rendering pass through `render` under 6 GiB."""
    scene = (files / "scene.shac").read_bytes()
    header = decode_container(scene)[0]
    (files / "bomb.shac").write_bytes(with_header_text(scene, json.dumps({**header, "pad": " " * 60 * 2**20})))
    info = _run(["info", "bomb.shac"], files, memory_bytes=2**30)
    assert info.returncode == 1 and info.stderr.strip() == (
        "error: bomb.shac: header inflates to more than the 65536 bytes allowed"
    ), info.stderr[-2000:]
    rays = craft(scene, lambda h, s: h["model_config"].update(eval_num_rays_per_chunk=2**20))
    (files / "rays.shac").write_bytes(rays)
    render = _run(["render", "rays.shac", "--output-path", "frames", "--device", "cpu"], files, memory_bytes=6 * 2**30)
    assert render.returncode == 1 and "Traceback" not in render.stderr, render.stderr[-2000:]
    assert render.stderr.strip().startswith("error: rays.shac: header asks for ") and "rendering pass" in render.stderr
    assert not (files / "frames").exists()


def test_info_escapes_strings_from_the_file(files: Path) -> None:
    scene = (files / "scene.shac").read_bytes()
    data = craft(scene, set_path("producer", "evil\x1b]0;owned\x07\x1b[2J"))
    data = craft(data, lambda h, s: s.update({"\x1b[31mred/x": b"1"}))
    (files / "escapes.shac").write_bytes(data)
    for args in (["info", "escapes.shac"], ["info", "escapes.shac", "--json"]):
        result = _run(args, files)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    text = _run(["info", "escapes.shac"], files).stdout
    assert "evil\\x1b]0;owned\\x07\\x1b[2J" in text and "\\x1b[31mred" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="drops to nobody to meet real folder permissions")
def test_render_writes_safely(files: Path) -> None:
    """A read-only output folder is one line before any frame is rendered; a planted symlink at the old fixed
    temporary name is not followed; frames are written through unique temporary files."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)
        scene = folder / "scene.shac"
        scene.write_bytes((files / "scene.shac").read_bytes())
        scene.chmod(0o644)
        (folder / "ro").mkdir(mode=0o555)
        (folder / "ro").chmod(0o555)
        frames = folder / "frames"
        frames.mkdir()
        decoy = folder / "decoy"
        decoy.write_bytes(b"keep")
        (frames / "00000.png.tmp").symlink_to(decoy)
        video_folder = folder / "ro-video"
        video_folder.mkdir(mode=0o555)
        video_folder.chmod(0o555)
        jobs = [
            {"name": "read-only", "argv": ["render", str(scene), "--output-path", str(folder / "ro" / "frames"),
                                           "--device", "cpu"], "uid": 65534},
            {"name": "read-only existing", "argv": ["render", str(scene), "--output-path", str(folder / "ro"),
                                                    "--device", "cpu"], "uid": 65534},
            {"name": "read-only video", "argv": ["render", str(scene), "--output-path", str(video_folder / "v.mp4"),
                                                 "--device", "cpu"], "uid": 65534},
            {"name": "planted", "argv": ["render", str(scene), "--output-path", str(frames), "--device", "cpu"]},
        ]  # fmt: skip
        results = run_harness(jobs, folder)
        for name, target in (("read-only", folder / "ro" / "frames"), ("read-only existing", folder / "ro"),
                             ("read-only video", video_folder / "v.mp4")):  # fmt: skip
            result = results[name]
            assert result["rc"] == 1 and "Traceback" not in result["stderr"], (name, result["stderr"][-2000:])
            assert result["stderr"].strip() == f"error: cannot write {target}: permission denied", result["stderr"]
        assert list((folder / "ro").iterdir()) == [] and list(video_folder.iterdir()) == []
        assert results["planted"]["rc"] == 0, results["planted"]["stderr"][-2000:]
        assert decoy.read_bytes() == b"keep"
        names = sorted(p.name for p in frames.iterdir())
        assert names == ["00000.png", "00000.png.tmp", "00001.png"]
        assert not (frames / "00000.png").is_symlink() and (frames / "00000.png").stat().st_size > 0
