"""What ``shacira export|render|view`` do, on top of nerfstudio (the CLI parsing lives in ``cli.py``)."""

from __future__ import annotations

import io
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from shacira_nerf.codec import atomic_output, check_writable, escape, naming, write_bytes_atomic
from shacira_nerf.errors import UserError
from shacira_nerf.units import BYTES_PER_MB

CONSOLE = Console(stderr=True)


CPU_RAYS_PER_CHUNK = 1024
"""Rays per forward pass when rendering on a CPU (see ``render``)."""


def training_folder(load_config: Path, config) -> Optional[Path]:
    """The folder ``ns-train`` ran in, if the run's location tells it: the config sits at
    ``<folder>/<output_dir>/<experiment>/<method>/<timestamp>/config.yml`` when ``output_dir`` was relative."""
    output_dir = Path(str(getattr(config, "output_dir", "outputs")))
    if output_dir.is_absolute():
        return None
    parts = (*output_dir.parts, str(config.experiment_name), str(config.method_name), str(config.timestamp))
    run = load_config.resolve().parent.parts
    if ".." in parts or len(run) <= len(parts) or tuple(run[-len(parts) :]) != parts:
        return None
    return Path(*run[: -len(parts)])


def _resolve_run_paths(config, load_config: Path, data: Optional[Path]) -> None:
    """Make the run's relative paths (its checkpoints and dataset) absolute, against the folder ns-train ran in."""
    folder = training_folder(load_config, config)
    if folder is not None:
        config.output_dir = folder / Path(str(config.output_dir))
    dm = config.pipeline.datamanager
    if data is not None:
        dm.data = data
        if not data.exists():
            raise UserError(f"--data {escape(data)}: no such folder")
        return
    # `ns-train --data X` stores X on the datamanager; the dataparser's own `data` is then only a default.
    path = Path(dm.data if getattr(dm, "data", None) is not None else dm.dataparser.data)
    if path.is_absolute() or folder is None:
        if path.exists():
            return
        where = "" if path.is_absolute() else " (a path relative to the folder ns-train ran in, which is unknown)"
        raise UserError(f"{escape(load_config)}: dataset {escape(path)} not found{where}: pass --data <its folder>")
    candidate = folder / path
    if not candidate.exists():
        raise UserError(f"{escape(load_config)}: dataset {escape(candidate)} not found (ns-train ran in "
                        f"{escape(folder)} with --data {escape(path)}): pass --data <its folder now>")  # fmt: skip
    dm.data = candidate


def load_trained_pipeline(load_config: Path, data: Optional[Path] = None):
    """nerfstudio's eval_setup (inference mode) on a shacira run, with clear errors for the usual mistakes.

    Runs store their paths as ``ns-train`` was given them; relative ones are resolved against the folder ns-train
    ran in (``training_folder``), so export works from any folder.
    """
    if not load_config.is_file():
        raise UserError(
            f"--load-config {escape(load_config)}: no such file (expected outputs/<scene>/shacira*/<run>/config.yml)"
        )
    from nerfstudio.utils.eval_utils import eval_setup

    def patch(config):
        if not str(getattr(config, "method_name", "")).startswith("shacira"):
            raise UserError(f"{escape(load_config)}: a '{config.method_name}' run, not a shacira run")
        _resolve_run_paths(config, load_config, data)
        return config

    try:
        config, pipeline, ckpt, step = eval_setup(load_config, test_mode="inference", update_config_callback=patch)
    except (UserError, KeyboardInterrupt):
        raise
    except SystemExit as exc:  # eval_setup exits when no checkpoint exists
        raise UserError(f"{escape(load_config)}: no checkpoint found (train first; exit {exc.code})") from None
    return config, pipeline, ckpt, step


def dataparser_transform(load_config: Path) -> Optional[dict]:
    """The run's dataparser_transforms.json (how dataset poses map into the model's frame), if present."""
    path = load_config.parent / "dataparser_transforms.json"
    if path.is_file():
        return json.loads(path.read_text())
    return None


def export(load_config: Path, output_path: Path, data: Optional[Path] = None, cameras: bool = True) -> int:
    check_writable(output_path)
    _, pipeline, ckpt, step = load_trained_pipeline(load_config, data)
    n, estimate_mb = export_pipeline(pipeline, load_config, output_path, cameras)
    CONSOLE.print(
        f"Wrote {escape(output_path)}: {n:,} bytes = {n / BYTES_PER_MB:.4f} MB (the file's size; the training "
        f"estimate was {estimate_mb:.4f} MB), from {escape(ckpt)} (step {step})",
        soft_wrap=True,
    )
    return n


def export_pipeline(pipeline, load_config: Path, output_path: Path, cameras: bool = True) -> Tuple[int, float]:
    """Entropy-code a shacira pipeline already in memory (loaded by ``export``, or the one a benchmark has just
    trained) into ``output_path``; returns (the file's bytes, the training estimate in MB)."""
    from shacira_nerf.codec import decode_container
    from shacira_nerf.nerf.scene_file import encode_scene

    with Progress(console=CONSOLE, transient=True) as progress:
        task = progress.add_task("Entropy-coding latents", total=None)
        cams = pipeline.datamanager.train_dataset.cameras if cameras else None
        data_bytes = encode_scene(pipeline.model, cams, dataparser_transform(load_config))
        progress.update(task, completed=1, total=1)
    n = write_bytes_atomic(output_path, data_bytes)  # exactly the bytes ns-eval measures
    return n, decode_container(data_bytes)[0]["estimate"]["size_MB"]


def _cameras_from_path_json(path: Path):
    from nerfstudio.cameras.camera_paths import get_path_from_json

    if not path.is_file():
        raise UserError(f"--camera-path {escape(path)}: no such file")
    try:
        spec = json.loads(path.read_text())
        return get_path_from_json(spec), spec.get("seconds"), spec.get("fps")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(
            f"--camera-path {escape(path)}: not a nerfstudio camera path ({type(exc).__name__}: {exc})"
        ) from None


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def read_scene_bytes(scene: Path) -> bytes:
    """The file's bytes, verified (checksums, envelope, kind) before anything heavy is imported: bad input fails
    fast, in one line that names the file."""
    from shacira_nerf.file_layer import SCENE_KIND, read_file

    return read_file(scene, SCENE_KIND)[1]


def decode_scene_file(scene: Path, data: bytes, device: str):
    """``decode_scene`` with errors that name the file."""
    from shacira_nerf.nerf.scene_file import decode_scene

    with naming(scene):
        return decode_scene(data, device)


def check_frames_folder(folder: Path) -> None:
    """Fail before rendering if PNG frames cannot be written into ``folder`` (made if missing)."""
    shown = escape(folder)
    if folder.exists():
        if not folder.is_dir():
            raise UserError(f"--output-path {shown}: exists and is not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"cannot write {shown}: permission denied")
        return
    check_writable(folder)


def render(
    scene: Path,
    output_path: Path,
    camera_path: Optional[Path],
    downscale: float,
    device: str,
    max_frames: Optional[int] = None,
) -> List[Path]:
    """Render frames from the file alone: a camera path (ns-render's JSON) or the stored training cameras."""
    from shacira_nerf.nerf.scene_file import check_camera_sizes

    if not (math.isfinite(downscale) and downscale > 0):
        raise UserError(f"--downscale must be a number > 0, got {downscale}")
    if max_frames is not None and max_frames < 1:
        raise UserError(f"--max-frames must be >= 1, got {max_frames}")
    data = read_scene_bytes(scene)
    video = output_path.suffix.lower() in (".mp4", ".mov", ".mkv")
    if video:
        check_writable(output_path)
    else:
        check_frames_folder(output_path)
    loaded = decode_scene_file(scene, data, device)
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
        raise UserError(f"{escape(scene)}: stores no cameras: pass --camera-path")
    if downscale != 1.0:
        cameras.rescale_output_resolution(1.0 / downscale)
    with naming(camera_path or scene):
        check_camera_sizes(cameras.width.cpu().numpy(), cameras.height.cpu().numpy(), "camera")
    cameras = cameras.to(loaded.model.device)
    n = len(cameras) if max_frames is None else min(len(cameras), max_frames)
    frames, paths = [], []
    if not video:
        output_path.mkdir(parents=False, exist_ok=True)
    with Progress(console=CONSOLE, transient=True) as progress:
        task = progress.add_task(f"Rendering {n} frames", total=n)
        for i in range(n):
            with torch.no_grad():
                out = loaded.model.get_outputs_for_camera(cameras[i : i + 1])
            frame = (out["rgb"].clamp(0, 1) * 255).round().byte().cpu().numpy()
            if video:
                frames.append(frame)
            else:  # written as rendered: a frame is on disk (atomically) as soon as it exists
                paths.append(output_path / f"{i:05d}.png")
                write_bytes_atomic(paths[-1], _png_bytes(frame))
            progress.advance(task)
    if video:
        return [_write_video(frames, output_path, fps)]
    CONSOLE.print(f"Rendered {len(paths)} frames from {escape(scene)} into {escape(output_path)}/", soft_wrap=True)
    return paths


def _write_video(frames: List[np.ndarray], path: Path, fps: float) -> Path:
    import imageio_ffmpeg
    import mediapy

    mediapy.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())
    with atomic_output(path) as tmp:
        mediapy.write_video(tmp, np.stack(frames), fps=fps)
    CONSOLE.print(f"Rendered {len(frames)} frames into {escape(path)}", soft_wrap=True)
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

    from shacira_nerf.report import file_report

    loaded = decode_scene_file(scene, data, device)
    report = file_report(data)
    if loaded.cameras is None:
        raise UserError(f"{escape(scene)}: stores no cameras; re-export it with cameras to view it")
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
