"""The compressed scene file: export, info, load, render equality, determinism, estimate agreement, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli, small_scene_model

from shacira_nerf.codec import ContainerError, container_layout, decode_container, encode_container
from shacira_nerf.nerf.scene_file import decode_scene, encode_pipeline, load_scene
from shacira_nerf.report import file_report, format_report


def test_info_json_total_equals_file_length(exported_scene: Path, env) -> None:
    result = run_cli(["shacira", "info", str(exported_scene), "--json"], env, REPO, 120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["total_bytes"] == os.path.getsize(exported_scene)
    assert report["checksums"] == "ok"
    assert sum(report["bytes_by_kind"].values()) == report["total_bytes"]
    assert report["ratio_to_float32_grid"] > 1 and report["bits_per_latent"] > 0
    text = run_cli(["shacira", "info", str(exported_scene)], env, REPO, 120)
    assert text.returncode == 0 and f"{os.path.getsize(exported_scene):,} bytes" in text.stdout
    assert "estimate" in text.stdout


def test_decoded_latents_are_bit_identical_and_renders_equal(exported_scene: Path, loaded_checkpoint) -> None:
    trained = loaded_checkpoint.model.eval()
    loaded = load_scene(exported_scene, "cpu")
    assert loaded.file_bytes == os.path.getsize(exported_scene)
    for name, grid in trained.grids.items():
        assert torch.equal(grid.integer_latents(), loaded.model.grids[name].integer_latents()), name
    cameras = loaded_checkpoint.datamanager.train_dataset.cameras
    assert loaded.cameras is not None and len(loaded.cameras) == len(cameras)
    for key in ("camera_to_worlds", "fx", "fy", "cx", "cy", "width", "height"):  # the file's cameras, bit for bit
        assert torch.equal(getattr(loaded.cameras, key), getattr(cameras, key).to(getattr(loaded.cameras, key))), key
    for i in (0, 7):
        with torch.no_grad():
            a = trained.get_outputs_for_camera(cameras[i : i + 1])["rgb"]
            b = loaded.model.get_outputs_for_camera(cameras[i : i + 1])["rgb"]
        assert torch.equal(a, b)


def test_export_is_deterministic(exported_scene: Path, loaded_checkpoint, short_run: Path, env, tmp_path) -> None:
    again = tmp_path / "again.shac"
    result = run_cli(["shacira", "export", "--load-config", str(short_run / "config.yml"), "--output-path",
                      str(again)], env, REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert again.read_bytes() == exported_scene.read_bytes()
    assert encode_pipeline(loaded_checkpoint) == exported_scene.read_bytes()  # what ns-eval measures


def test_coded_latents_match_the_training_estimate(exported_scene: Path) -> None:
    """Coded latent bytes within 2% of the estimate (documented overhead: range-coder flush, 4 bytes/stream)."""
    data = exported_scene.read_bytes()
    header, _ = decode_container(data)
    layout = container_layout(data)
    latent_sections = [s for s in layout["sections"] if "/latents/" in s["name"]]
    coded = sum(s["payload_bytes"] for s in latent_sections)
    estimate_bytes = header["estimate"]["latent_MB"] * 1e6
    overhead = 4 * sum(g["latent_dim"] for g in header["grids"].values()) * len(latent_sections)
    assert abs(coded - estimate_bytes) <= 0.02 * estimate_bytes + overhead, (coded, estimate_bytes)
    shannon = sum(g["shannon_bits"] for g in header["grids"].values()) / 8
    assert shannon <= coded <= shannon * 1.01 + overhead


def test_cameras_are_stored_in_float32_and_read_back_as_written() -> None:
    """A reader gives cameras back as float32 poses and intrinsics and integer sizes, so the file stores 4 bytes a
    number and nothing read back changes; only a size float32 cannot hold makes the record float64."""
    from nerfstudio.cameras.cameras import Cameras

    from shacira_nerf.nerf.scene_file import cameras_from_array, cameras_to_array

    def cameras(dtype: torch.dtype, width: int) -> Cameras:
        c2w = torch.eye(4, dtype=dtype)[:3].repeat(3, 1, 1) + torch.linspace(0, 1, 36, dtype=dtype).view(3, 3, 4) / 7
        fx = torch.full((3, 1), 555.5555, dtype=torch.float64)  # as the Blender parser gives it
        return Cameras(camera_to_worlds=c2w, fx=fx, fy=fx, cx=200.0, cy=100.5, width=width, height=1)

    for dtype in (torch.float32, torch.float64):
        written = cameras(dtype, 400)
        arr = cameras_to_array(written)
        assert arr.dtype == np.float32 and arr.shape == (3, 18)
        back = cameras_from_array(arr, 3)
        for key in ("camera_to_worlds", "fx", "fy", "cx", "cy", "width", "height"):
            value = getattr(written, key)
            assert torch.equal(getattr(back, key), value.float() if value.is_floating_point() else value), key
    wide = cameras(torch.float32, 2**24 + 1)  # 16,777,217 x 1 pixels: within the file's pixel bound, not a float32
    arr = cameras_to_array(wide)
    assert arr.dtype == np.float64 and int(arr[0, 16]) == 2**24 + 1
    assert torch.equal(cameras_from_array(arr, 3).width, wide.width)


def test_the_estimate_counts_the_stored_cameras_exactly(exported_scene: Path) -> None:
    """The cameras are known while training: the estimate's camera bytes are the cameras section's payload, and its
    total is latents + networks + cameras."""
    data = exported_scene.read_bytes()
    header, _ = decode_container(data)
    estimate = header["estimate"]
    cameras = [s for s in container_layout(data)["sections"] if s["name"] == "cameras"]
    assert len(cameras) == 1
    assert round(estimate["camera_MB"] * 1e6) == cameras[0]["payload_bytes"]
    parts = estimate["latent_MB"] + estimate["network_MB"] + estimate["camera_MB"]
    assert estimate["size_MB"] == pytest.approx(parts, abs=2e-9)  # each rounded to 9 decimals in the header


def test_file_decodes_without_dataset_or_checkpoint(
    exported_scene: Path, loaded_checkpoint, tmp_path: Path, env
) -> None:
    """`shacira render` from a copy of the file alone, in a folder with nothing else: the checkpoint's pixels."""
    alone = tmp_path / "copy.shac"
    shutil.copy(exported_scene, alone)
    out = tmp_path / "frames"
    result = run_cli(["shacira", "render", str(alone), "--output-path", str(out), "--max-frames", "2"], env, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    frames = sorted(out.glob("*.png"))
    assert len(frames) == 2
    from PIL import Image

    img = np.asarray(Image.open(frames[0]))
    model = loaded_checkpoint.model.eval()
    with torch.no_grad():
        rgb = model.get_outputs_for_camera(loaded_checkpoint.datamanager.train_dataset.cameras[0:1])["rgb"]
    expected = (rgb.clamp(0, 1) * 255).round().byte().numpy()
    # Another process (different thread count) may round a few float sums differently: at most one 8-bit level.
    diff = np.abs(img.astype(int) - expected.astype(int))
    assert img.shape == (64, 64, 3) and diff.max() <= 1 and diff.mean() < 0.05


def test_render_camera_path_json(exported_scene: Path, tmp_path: Path, env) -> None:
    c2w = np.eye(4)
    c2w[:3, 3] = [0.0, -4.0, 0.0]
    c2w[:3, :3] = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]]).T  # looking along +y towards the origin
    spec = {
        "render_height": 32, "render_width": 32, "seconds": 1, "fps": 2,
        "camera_path": [{"camera_to_world": c2w.flatten().tolist(), "fov": 50, "aspect": 1}] * 2,
    }  # fmt: skip
    path = tmp_path / "path.json"
    path.write_text(json.dumps(spec))
    result = run_cli(
        ["shacira", "render", str(exported_scene), "--camera-path", str(path), "--output-path", str(tmp_path / "o")],
        env, REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list((tmp_path / "o").glob("*.png"))) == 2


# ------------------------------------------------------------------------------------------------------ bad input


def _bad_inputs(tmp_path: Path, good: bytes) -> dict:
    header, sections = decode_container(good)
    newer = bytearray(good)
    struct.pack_into("<H", newer, 8, 99)
    ckpt = tmp_path / "model.ckpt"
    with zipfile.ZipFile(ckpt, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    png = tmp_path / "image.png"
    from PIL import Image

    Image.new("RGB", (4, 4)).save(png)
    image_kind = encode_container({**header, "kind": "image"}, list(sections.items()))
    files = {
        "empty": b"",
        "wrong magic": b"NOTSHAC!" + good[8:],
        "newer version": bytes(newer),
        "truncated": good[: len(good) // 2],
        "flipped bit": good[:5000] + bytes([good[5000] ^ 0x10]) + good[5001:],
        "image file": image_kind,
    }
    paths = {"png": png, "ckpt": ckpt}
    for name, data in files.items():
        p = tmp_path / f"{name.replace(' ', '_')}.shac"
        p.write_bytes(data)
        paths[name] = p
    paths["missing"] = tmp_path / "missing.shac"
    paths["folder"] = tmp_path
    return paths


EXPECTED = {
    "empty": "file is empty",
    "wrong magic": "bad magic",
    "newer version": "unsupported format version 99",
    "truncated": "truncated",
    "flipped bit": "checksum mismatch",
    "image file": "not a scene file",
    "png": "PNG",
    "ckpt": "checkpoint",
    "missing": "no such file",
    "folder": "is a folder",
}


def test_bad_files_give_one_line_errors_in_process(exported_scene: Path, tmp_path: Path) -> None:
    paths = _bad_inputs(tmp_path, exported_scene.read_bytes())
    for name, path in paths.items():
        with pytest.raises(ContainerError) as info:
            load_scene(path)
        message = str(info.value)
        assert "\n" not in message and EXPECTED[name] in message, (name, message)


@pytest.mark.parametrize("command", ["info", "render", "view"])
def test_bad_files_give_one_line_errors_on_the_command_line(command: str, exported_scene: Path, tmp_path, env) -> None:
    paths = _bad_inputs(tmp_path, exported_scene.read_bytes())
    for name in ("empty", "png", "ckpt", "truncated", "missing") if command != "info" else paths:
        args = ["shacira", command, str(paths[name])]
        if command == "render":
            args += ["--output-path", str(tmp_path / "frames")]
        result = run_cli(args, env, tmp_path, 120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1, (name, result.stderr[-1500:])
        assert "Traceback" not in result.stderr and len(lines) == 1, (name, result.stderr[-1500:])
        assert lines[0].startswith(f"error: {paths[name]}: "), (name, lines[0])  # one form, naming the file
        expected = "header image must be an object" if (command, name) == ("info", "image file") else EXPECTED[name]
        assert expected in lines[0], (name, lines[0])
    assert not (tmp_path / "frames").exists()


def test_export_to_missing_folder_fails_before_work(short_run: Path, tmp_path: Path, env) -> None:
    target = tmp_path / "no" / "such" / "scene.shac"
    result = run_cli(["shacira", "export", "--load-config", str(short_run / "config.yml"), "--output-path",
                      str(target)], env, REPO, 120)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot write")
    assert not target.parent.exists()
    bad = run_cli(["shacira", "export", "--load-config", str(tmp_path / "nope.yml"), "--output-path",
                   str(tmp_path / "x.shac")], env, REPO, 120)  # fmt: skip
    assert bad.returncode == 1 and "no such file" in bad.stderr and not (tmp_path / "x.shac").exists()


def _relative_run(short_run: Path, where: Path, data_link: bool) -> Path:
    """A copy of the short run as `ns-train --data data/shacira-toy --output-dir outputs` run in ``where`` would
    have left it: relative dataset and output paths in its config.yml. Returns the config's path."""
    import yaml

    run = where / "outputs" / "toy" / "shacira-tiny" / "short"
    shutil.copytree(short_run, run)
    config = yaml.load((run / "config.yml").read_text(), Loader=yaml.Loader)  # our own run's config, as ns-* read it
    config.output_dir = Path("outputs")
    config.pipeline.datamanager.data = Path("data/shacira-toy")
    (run / "config.yml").write_text(yaml.dump(config))
    if data_link:
        (where / "data").mkdir()
        (where / "data" / "shacira-toy").symlink_to(REPO / "data" / "shacira-toy")
    return run / "config.yml"


def test_export_from_another_folder_resolves_the_runs_relative_paths(short_run: Path, tmp_path: Path, env) -> None:
    """The run stored `--data data/shacira-toy`; export from elsewhere finds it next to where ns-train ran. The
    message is one line even in a narrow terminal."""
    config = _relative_run(short_run, tmp_path / "project", data_link=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli(["shacira", "export", "--load-config", str(config), "--output-path", "x.shac"],
                     {**env, "COLUMNS": "60"}, elsewhere)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (elsewhere / "x.shac").stat().st_size > 0
    wrote = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Wrote x.shac: ")]
    assert len(wrote) == 1 and wrote[0].rstrip().endswith(")") and "(step 29)" in wrote[0], result.stderr[-2000:]


def test_export_says_which_data_to_pass_when_the_dataset_moved(short_run: Path, tmp_path: Path, env) -> None:
    config = _relative_run(short_run, tmp_path / "project", data_link=False)
    result = run_cli(["shacira", "export", "--load-config", str(config), "--output-path", "x.shac"], env, tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    project = tmp_path / "project"
    assert lines[-1] == (f"error: {config}: dataset {project / 'data' / 'shacira-toy'} not found (ns-train ran in "
                         f"{project} with --data data/shacira-toy): pass --data <its folder now>")  # fmt: skip
    assert not (tmp_path / "x.shac").exists()


def test_fuzz_truncations_and_bit_flips(exported_scene: Path) -> None:
    """3000 seeded corruptions of a real file: each errors cleanly (ContainerError); none decodes to a model."""
    good = exported_scene.read_bytes()
    rng = np.random.default_rng(1234)
    header_end = container_layout(good)["header_bytes"]
    outcomes = {"error": 0}
    for case in range(3000):
        data = bytearray(good)
        if case % 3 == 0:
            # Truncations: every byte of the header region, then random offsets.
            cut = case // 3 if case // 3 < header_end else int(rng.integers(0, len(good)))
            data = data[:cut]
        else:
            for _ in range(int(rng.integers(1, 4))):
                pos = int(rng.integers(0, len(good)))
                data[pos] ^= 1 << int(rng.integers(0, 8))
        try:
            decode_scene(bytes(data))
        except ContainerError as exc:
            assert "\n" not in str(exc)
            outcomes["error"] += 1
        else:
            raise AssertionError(f"corruption case {case} decoded without error")
    assert outcomes["error"] == 3000


def test_report_of_real_file(exported_scene: Path) -> None:
    report = file_report(exported_scene.read_bytes())
    assert report["kind"] == "nerfstudio-scene"
    assert report["bytes_by_kind"]["latents"] > report["bytes_by_kind"]["entropy_tables"]


def test_training_ends_with_networks_the_file_stores_as_float16(exported_scene: Path, loaded_checkpoint) -> None:
    """After its last step, training rounds the networks to float16 (``network_precision``): the checkpoint that
    ns-eval measures holds float16 numbers, and the file stores them as float16 (half the float32 bytes)."""
    from shacira_nerf.codec import unpack_array

    model = loaded_checkpoint.model
    for name, tensor in model.stored_network_tensors().items():
        if name != "field.embedding_appearance.embedding.weight":  # stored as its mean
            assert torch.equal(tensor.half().float(), tensor), name
    _, sections = decode_container(exported_scene.read_bytes())
    stored = {n: unpack_array(p) for n, p in sections.items() if n.startswith("network/")}
    assert stored and sum(a.dtype == np.float16 for a in stored.values()) >= len(stored) - 1


def test_proposal_tables_shrink_with_their_flag_and_the_file_rebuilds_them() -> None:
    """``proposal_log2_hashmap_size`` sets every proposal grid's largest table (the field's stays), and a reader
    rebuilds the same grids from the header: the same geometry and the same integer latents."""
    from shacira_nerf.nerf.model import ShaciraConfigError, ShaciraModelConfig
    from shacira_nerf.nerf.scene_file import decode_scene, encode_scene

    default, small = small_scene_model(), small_scene_model(proposal_log2_hashmap_size=5)
    for name, grid in small.grids.items():
        assert grid.geometry.log2_hashmap_size == (10 if name == "field" else 5), name
        assert max(grid.geometry.level_sizes) <= 2**grid.geometry.log2_hashmap_size, name
    assert small.grids["field"].latents.values.numel() == default.grids["field"].latents.values.numel()
    assert all(small.grids[n].latents.values.numel() < default.grids[n].latents.values.numel()
               for n in small.grids if n != "field")  # fmt: skip
    data = encode_scene(small)
    decoded = decode_scene(data).model
    assert decoded.config.proposal_log2_hashmap_size == 5
    # `shacira info` says where the bytes go, grid by grid: the grids' sections add up to the file's latents and tables
    report = file_report(data)
    grids = report["grids"]
    assert {n: g["log2_hashmap_size"] for n, g in grids.items()} == {"field": 10, "proposal_0": 5, "proposal_1": 5}
    assert sum(g["latent_bytes"] for g in grids.values()) == report["bytes_by_kind"]["latents"]
    assert sum(g["table_bytes"] for g in grids.values()) == report["bytes_by_kind"]["entropy_tables"]
    assert sum(g["num_latents"] for g in grids.values()) == report["num_latents"]
    text = format_report("small.shac", report)
    assert re.search(r"^    proposal_0 +[\d,]+ bytes .*2\^5-row table", text, re.MULTILINE), text
    for name, grid in small.grids.items():
        assert decoded.grids[name].geometry == grid.geometry, name
        assert torch.equal(decoded.grids[name].latents.values, grid.latents.values), name
    with pytest.raises(ShaciraConfigError, match="proposal_log2_hashmap_size must be 0 .* or in \\[4, 26\\], got 3"):
        ShaciraModelConfig(proposal_log2_hashmap_size=3)


@pytest.mark.parametrize("cuda_graph", [True, False])
def test_a_file_trained_with_cuda_graph_set_decodes_on_a_cpu(cuda_graph: bool) -> None:
    """``--pipeline.model.cuda-graph True`` or ``False`` (how a GPU run's steps ran) is stored in the header as a
    bool; a reader on a machine without CUDA, where True is an error, decodes the scene with the setting cleared."""
    from shacira_nerf.nerf.scene_file import decode_scene, encode_scene

    model = small_scene_model()
    model.config.cuda_graph = cuda_graph  # as a GPU run's config holds it (a CPU model cannot be built with True)
    data = encode_scene(model)
    assert decode_container(data)[0]["model_config"]["cuda_graph"] is cuda_graph
    decoded = decode_scene(data).model
    assert decoded.config.cuda_graph is None
    for name, grid in model.grids.items():
        assert torch.equal(decoded.grids[name].latents.values, grid.latents.values), name
