"""What ``shacira export|render|view`` do, on top of nerfstudio (the CLI parsing lives in ``cli.py``)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from shacira_nerf.errors import UserError
from shacira_nerf.units import BYTES_PER_MB

CONSOLE = Console(stderr=True)


CPU_RAYS_PER_CHUNK = 1024
"""Rays per forward pass when rendering on a CPU (see ``render``)."""


def check_output_folder(path: Path) -> None:
    """Fail early (before minutes of loading) if the output cannot be written."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write {path}: folder {parent} is not writable")


def load_trained_pipeline(load_config: Path, data: Optional[Path] = None):
    """nerfstudio's eval_setup (inference mode) on a shacira run, with clear errors for the usual mistakes."""
    if not load_config.is_file():
        raise UserError(
            f"--load-config {load_config}: no such file (expected outputs/<scene>/shacira*/<run>/config.yml)"
        )
    from nerfstudio.utils.eval_utils import eval_setup

    def patch(config):
        if not str(getattr(config, "method_name", "")).startswith("shacira"):
            raise UserError(f"{load_config} is a '{config.method_name}' run, not a shacira run")
        dm = config.pipeline.datamanager
        if data is not None:
            dm.data = data
        # `ns-train --data X` stores X on the datamanager; the dataparser's own `data` is then only a default.
        path = dm.data if getattr(dm, "data", None) is not None else dm.dataparser.data
        if not Path(path).exists():
            raise UserError(f"dataset {path} (from {load_config}) not found: pass --data to point to it")
        return config

    try:
        config, pipeline, ckpt, step = eval_setup(load_config, test_mode="inference", update_config_callback=patch)
    except (UserError, KeyboardInterrupt):
        raise
    except SystemExit as exc:  # eval_setup exits when no checkpoint exists
        raise UserError(f"no checkpoint found for {load_config} (train first; exit {exc.code})") from None
    return config, pipeline, ckpt, step


def dataparser_transform(load_config: Path) -> Optional[dict]:
    """The run's dataparser_transforms.json (how dataset poses map into the model's frame), if present."""
    path = load_config.parent / "dataparser_transforms.json"
    if path.is_file():
        return json.loads(path.read_text())
    return None


def export(load_config: Path, output_path: Path, data: Optional[Path] = None, cameras: bool = True) -> int:
    from shacira_nerf.codec import decode_container, write_container
    from shacira_nerf.nerf.scene_file import encode_scene

    check_output_folder(output_path)
    _, pipeline, ckpt, step = load_trained_pipeline(load_config, data)
    model = pipeline.model
    with Progress(console=CONSOLE, transient=True) as progress:
        task = progress.add_task("Entropy-coding latents", total=None)
        cams = pipeline.datamanager.train_dataset.cameras if cameras else None
        data_bytes = encode_scene(model, cams, dataparser_transform(load_config))
        progress.update(task, completed=1, total=1)
    header, sections = decode_container(data_bytes)
    n = write_container(output_path, header, list(sections.items()))
    est = header["estimate"]
    CONSOLE.print(
        f"Wrote {output_path}: {n:,} bytes = {n / BYTES_PER_MB:.4f} MB (file size; training estimate was {est['size_MB']:.4f} MB)"
        f" from {ckpt} (step {step})"
    )
    return n


def _cameras_from_path_json(path: Path):
    from nerfstudio.cameras.camera_paths import get_path_from_json

    if not path.is_file():
        raise UserError(f"--camera-path {path}: no such file")
    try:
        spec = json.loads(path.read_text())
        return get_path_from_json(spec), spec.get("seconds"), spec.get("fps")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"--camera-path {path}: not a nerfstudio camera path ({type(exc).__name__}: {exc})") from None


def _save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)


def read_scene_bytes(scene: Path) -> bytes:
    """The file's bytes, verified (checksums, kind) before anything heavy is imported: bad input fails fast."""
    from shacira_nerf.codec import decode_container, read_file_bytes, require_kind

    data = read_file_bytes(scene)
    require_kind(decode_container(data)[0], "nerfstudio-scene")
    return data


def render(
    scene: Path,
    output_path: Path,
    camera_path: Optional[Path],
    downscale: float,
    device: str,
    max_frames: Optional[int] = None,
) -> List[Path]:
    """Render frames from the file alone: a camera path (ns-render's JSON) or the stored training cameras."""
    data = read_scene_bytes(scene)
    video = output_path.suffix.lower() in (".mp4", ".mov", ".mkv")
    if video:
        check_output_folder(output_path)
    else:
        if output_path.exists() and not output_path.is_dir():
            raise UserError(f"--output-path {output_path} exists and is not a folder")
        parent = output_path.parent
        if not parent.is_dir():
            raise UserError(f"cannot write {output_path}: folder {parent} does not exist")
    from shacira_nerf.nerf.scene_file import decode_scene

    loaded = decode_scene(data, device)
    if loaded.model.device.type == "cpu":
        # Smaller chunks are faster on a CPU (less memory to allocate and touch per pass; each ray is independent):
        # measured on a nerfacto-sized scene, 1024 rays per chunk rendered 2x faster than nerfacto's 32768.
        loaded.model.config.eval_num_rays_per_chunk = min(
            loaded.model.config.eval_num_rays_per_chunk, CPU_RAYS_PER_CHUNK
        )
    fps = 24.0
    if camera_path is not None:
        cameras, seconds, path_fps = _cameras_from_path_json(camera_path)
        fps = float(path_fps or fps)
    elif loaded.cameras is not None:
        cameras = loaded.cameras
    else:
        raise UserError(f"{scene} stores no cameras: pass --camera-path")
    if downscale != 1.0:
        cameras.rescale_output_resolution(1.0 / downscale)
    cameras = cameras.to(loaded.model.device)
    n = len(cameras) if max_frames is None else min(len(cameras), max_frames)
    frames = []
    with Progress(console=CONSOLE, transient=True) as progress:
        task = progress.add_task(f"Rendering {n} frames", total=n)
        for i in range(n):
            with torch.no_grad():
                out = loaded.model.get_outputs_for_camera(cameras[i : i + 1])
            frames.append((out["rgb"].clamp(0, 1) * 255).round().byte().cpu().numpy())
            progress.advance(task)
    if video:
        return [_write_video(frames, output_path, fps)]
    output_path.mkdir(parents=False, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        p = output_path / f"{i:05d}.png"
        _save_png(frame, p)
        paths.append(p)
    CONSOLE.print(f"Rendered {len(paths)} frames from {scene} into {output_path}/")
    return paths


def _write_video(frames: List[np.ndarray], path: Path, fps: float) -> Path:
    import imageio_ffmpeg
    import mediapy

    mediapy.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    mediapy.write_video(tmp, np.stack(frames), fps=fps)
    os.replace(tmp, path)
    CONSOLE.print(f"Rendered {len(frames)} frames into {path}")
    return path


class _FileDataset:
    """Just enough of an InputDataset for the viewer's camera frustums: cameras and a thumbnail per camera.

    The thumbnails are rendered from the compressed model itself (the dataset's photos are not in the file).
    """

    def __init__(self, model, cameras) -> None:
        self.model = model
        self.cameras = cameras

    def __len__(self) -> int:
        return len(self.cameras)

    def __getitem__(self, idx: int) -> dict:
        cam = self.cameras[idx : idx + 1]
        scale = 48.0 / float(cam.width.max())
        cam.rescale_output_resolution(scale)
        with torch.no_grad():
            rgb = self.model.get_outputs_for_camera(cam.to(self.model.device))["rgb"]
        return {"image": rgb.clamp(0, 1).cpu()}


class _FileDataManager:
    includes_time = False

    def __init__(self, dataset) -> None:
        self.train_dataset = dataset
        self.eval_dataset = None


class FilePipeline(torch.nn.Module):
    """A pipeline stand-in for the viewer: the decoded model and the file's cameras; no dataset, no checkpoint."""

    def __init__(self, model, cameras) -> None:
        super().__init__()
        self.model = model
        self.datamanager = _FileDataManager(_FileDataset(model, cameras))


def view(scene: Path, port: Optional[int], host: str, device: str, max_seconds: Optional[float]) -> None:
    """Serve the decoded scene in nerfstudio's viewer until interrupted (or for ``max_seconds``)."""
    data = read_scene_bytes(scene)
    from nerfstudio.configs.base_config import ViewerConfig
    from nerfstudio.viewer.viewer import Viewer

    from shacira_nerf.nerf.scene_file import decode_scene
    from shacira_nerf.report import file_report

    loaded = decode_scene(data, device)
    report = file_report(data)
    if loaded.cameras is None:
        raise UserError(f"{scene} stores no cameras; re-export it with cameras to view it")
    loaded.model.compression.show_file(
        report["total_bytes"], report["bits_per_latent"], report["ratio_to_float32_grid"]
    )
    pipeline = FilePipeline(loaded.model, loaded.cameras)
    config = ViewerConfig(
        websocket_port=port, websocket_host=host, num_rays_per_chunk=1 << 14, max_num_display_images=64
    )
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"shacira-view-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    viewer = Viewer(
        config, log_filename=log_dir / "viewer_log.txt", datapath=scene, pipeline=pipeline,
        train_lock=threading.Lock(),
    )  # fmt: skip
    viewer.init_scene(train_dataset=pipeline.datamanager.train_dataset, train_state="completed")
    viewer.update_scene(step=0)
    CONSOLE.print(
        f"Viewer at {viewer.viewer_info[0] if viewer.viewer_info else ''} — {scene}: {report['total_bytes']:,} bytes"
    )
    start = time.time()
    try:
        while max_seconds is None or time.time() - start < max_seconds:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
