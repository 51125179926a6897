"""A trained shacira model <-> the self-describing compressed scene file (``.shac``), and nothing about bytes.

What the file holds (sections of the container in ``codec/container.py``):
- header: the model config needed to rebuild the field, the scene box, the dataparser transform, every grid's
  geometry and coder parameters, the list of network tensors, and the training-time size estimate;
- ``<grid>/table/<t>`` and ``<grid>/latents/<level>``: integer probability tables (one per latent dimension, or
  per level and dimension with ``entropy_model`` "per_level", which the grid's header entry then names) and
  range-coded latents (``bitstream.py``) for the main field and every proposal network;
- ``network/<name>``: decoder, MLP and appearance weights as float16 arrays (``network_precision``; "int8": int8
  values and a float32 scale per tensor, ``core/precision.py``; training rounds them after its last step; a tensor float16 does not hold exactly is stored as float32, so the file always
  decodes to the model that wrote it), the appearance embedding reduced to its mean, all that novel views use;
- ``cameras``: the training cameras (poses and intrinsics) so that the viewer can show them without the dataset.

Loading rebuilds a ``ShaciraModel`` in eval mode with the decoded integer latents, on any device.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import SceneBox

from shacira_nerf.bitstream import check_grid_budget, decode_grid, encode_grid
from shacira_nerf.codec import ContainerError, naming, pack_array, read_file_bytes, unpack_array
from shacira_nerf.core.precision import storage_array
from shacira_nerf.file_layer import (
    MAX_DIM,
    MAX_LEVELS,
    MAX_RES,
    SCENE_KIND,
    Envelope,
    check_rebuilt_model,
    encode_file,
    need_bool,
    need_dict,
    need_int,
    need_keys,
    need_list,
    need_number,
    read_envelope,
    read_networks,
    read_setting,
    require_section,
    shown,
)
from shacira_nerf.nerf.model import CAMERA_RECORD_FLOATS, ShaciraConfigError, ShaciraModel, ShaciraModelConfig

__all__ = ["SCENE_KIND", "LoadedScene", "decode_scene", "encode_pipeline", "encode_scene", "load_scene"]

_SKIPPED_CONFIG_FIELDS = {"_target", "camera_optimizer"}

# ---------------------------------------------------------------------------------------------------- limits
MAX_WIDTH = 4096
"""Widest MLP layer or embedding a header may claim (presets: 64)."""
MAX_SAMPLES = 4096
"""Most samples per ray (presets: 48 for the field, 256 and 96 for the proposal networks)."""
MAX_PROPOSALS = 8
"""Most proposal networks and proposal iterations (presets: 2)."""
MAX_PASS_NUMBERS = 2**30
"""Most numbers one rendering pass may hold: rays per chunk x samples per ray x widest layer (nerfacto's defaults:
32768 x 256 x 64 = 2^29)."""
MAX_CAMERAS = 2**16
MAX_CAMERA_PIXELS = 2**26
"""Largest camera (width x height) a file may store or a render may ask for: 67 M pixels, 8192 x 8192."""

_INT_LIMITS = {
    "num_levels": (1, MAX_LEVELS), "base_res": (1, MAX_RES), "max_res": (1, MAX_RES), "log2_hashmap_size": (4, 26),
    "proposal_log2_hashmap_size": (0, 26),
    "features_per_level": (1, MAX_DIM), "latent_dim": (1, MAX_DIM), "feature_dim": (1, MAX_DIM),
    "hidden_dim": (1, MAX_WIDTH), "hidden_dim_color": (1, MAX_WIDTH), "hidden_dim_transient": (1, MAX_WIDTH),
    "appearance_embed_dim": (0, MAX_WIDTH), "num_nerf_samples_per_ray": (1, MAX_SAMPLES),
    "num_proposal_iterations": (1, MAX_PROPOSALS), "eval_num_rays_per_chunk": (1, 2**20),
}  # fmt: skip
"""Ranges of the integer settings that size modules, loops or a rendering pass (others: [0, 2^31 - 1])."""
_TUPLE_ITEM_LIMITS = {"num_proposal_samples_per_ray": (1, MAX_SAMPLES), "entropy_filters": (1, MAX_DIM)}
_PROPOSAL_ARG_LIMITS = {
    "num_levels": (1, MAX_LEVELS), "base_res": (1, MAX_RES), "max_res": (1, MAX_RES), "log2_hashmap_size": (4, 26),
    "num_layers": (1, 64), "hidden_dim": (1, MAX_WIDTH),
}  # fmt: skip


@dataclass
class LoadedScene:
    """A decoded scene file."""

    model: ShaciraModel
    """The rebuilt model, in eval mode."""
    header: Dict[str, Any]
    """The file's header."""
    cameras: Optional[Cameras]
    """Training cameras stored in the file (None if it has none)."""
    file_bytes: int
    """Byte length of the file: the size users are told."""


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def config_to_json(config: ShaciraModelConfig) -> Dict[str, Any]:
    """The model config's plain fields (everything needed to rebuild the modules)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in _SKIPPED_CONFIG_FIELDS:
            continue
        if isinstance(value, tuple):
            value = list(value)
        if _jsonable(value):
            out[f.name] = value
    return out


def _setting(name: str, value: Any, default: Any, kind: Any) -> Any:
    """One model setting from the header, checked against the type of its default (and its range, for sizes)."""
    what = f"model_config.{name}"
    if name != "proposal_net_args_list":
        limits = _TUPLE_ITEM_LIMITS.get(name) or _INT_LIMITS.get(name, (0, 2**31 - 1))
        return read_setting(what, value, default, kind, limits)
    items = need_list(value, what, MAX_PROPOSALS)
    if not items:
        raise ContainerError(f"header {what} is empty")
    out = []
    for i, item in enumerate(items):
        args = need_dict(item, f"{what}[{i}]")
        need_keys(args, f"{what}[{i}]", (*_PROPOSAL_ARG_LIMITS, "use_linear"))
        checked = {k: need_int(v, f"{what}[{i}].{k}", *_PROPOSAL_ARG_LIMITS[k]) for k, v in args.items()
                   if k != "use_linear"}  # fmt: skip
        if "use_linear" in args:
            checked["use_linear"] = need_bool(args["use_linear"], f"{what}[{i}].use_linear")
        out.append(checked)
    return out


def config_from_json(values: Dict[str, Any]) -> ShaciraModelConfig:
    """Rebuild the model config, every value checked; unknown keys (a newer writer) are an error, missing ones take
    defaults."""
    values = need_dict(values, "model_config")
    defaults = ShaciraModelConfig()
    known = {f.name: f for f in dataclasses.fields(ShaciraModelConfig) if f.name not in _SKIPPED_CONFIG_FIELDS}
    need_keys(values, "model_config", list(known))
    kinds = typing.get_type_hints(ShaciraModelConfig)  # the annotations are strings (postponed evaluation)
    kwargs = {name: _setting(name, value, getattr(defaults, name), kinds[name]) for name, value in values.items()}
    # The lookup backend is how training ran, not part of the scene: decode with the fastest tested one here
    # (a file trained with "tcnn" or "triton" on a GPU renders on a CPU).
    kwargs["implementation"] = "auto"
    # Likewise how its steps ran (CUDA graphs or eager, compiled or not): a file trained with
    # ``--pipeline.model.cuda-graph True`` decodes on a machine without CUDA, where that setting is an error.
    kwargs["cuda_graph"], kwargs["compile"] = None, False
    try:
        config = ShaciraModelConfig(**kwargs)
    except ShaciraConfigError as exc:
        raise ContainerError(f"header has an invalid model setting: {exc}") from None
    config.camera_optimizer.mode = "off"
    return config


def _check_pass_budget(config: ShaciraModelConfig) -> None:
    """Refuse settings whose rendering passes would hold more than ``MAX_PASS_NUMBERS`` numbers."""
    samples = max(config.num_nerf_samples_per_ray, *config.num_proposal_samples_per_ray)
    widths = [config.hidden_dim, config.hidden_dim_color, config.hidden_dim_transient, config.appearance_embed_dim]
    width = max(widths + [a.get("hidden_dim", 64) for a in config.proposal_net_args_list])
    numbers = config.eval_num_rays_per_chunk * samples * width
    if numbers > MAX_PASS_NUMBERS:
        raise ContainerError(f"header asks for {numbers:,} numbers per rendering pass (eval_num_rays_per_chunk x "
                             f"samples per ray x widest layer), more than the {MAX_PASS_NUMBERS:,} allowed")  # fmt: skip


def cameras_to_array(cameras: Cameras) -> np.ndarray:
    """[N, 18]: camera-to-world 3x4 (row-major), fx, fy, cx, cy, width, height; float32 unless a size needs float64.

    Why float32: ``cameras_from_array`` gives poses and intrinsics back as float32 (nerfstudio's ``Cameras`` hold
    float32; the Blender parser's float64 focal length is read back as float32 either way) and sizes as integers,
    so float32 loses nothing a reader ever saw, in half of float64's bytes (7.2 kB of a lego file, 2.7% at λ 3e-2).
    Only a size beyond float32's integers (2^24) makes the record float64.
    """
    c2w = cameras.camera_to_worlds.reshape(-1, 12).float().double()
    intr = torch.cat([cameras.fx, cameras.fy, cameras.cx, cameras.cy], dim=-1).reshape(-1, 4).float().double()
    sizes = torch.cat([cameras.width, cameras.height], dim=-1).reshape(-1, 2).double()
    out = torch.cat([c2w, intr, sizes], dim=-1).cpu().numpy()
    assert out.shape[1] == CAMERA_RECORD_FLOATS  # what the size estimate counts (model.stored_camera_bytes)
    single = out.astype(np.float32)
    return single if np.array_equal(single.astype(np.float64), out) else out


def check_camera_sizes(width: np.ndarray, height: np.ndarray, what: str) -> None:
    """Refuse cameras that are not whole positive pixel sizes up to ``MAX_CAMERA_PIXELS`` (before any ray exists)."""
    w, h = np.asarray(width, dtype=np.float64).reshape(-1), np.asarray(height, dtype=np.float64).reshape(-1)
    bad = ~(np.isfinite(w) & np.isfinite(h) & (w >= 1) & (h >= 1) & (w == np.round(w)) & (h == np.round(h)))
    bad |= ~(w * h <= MAX_CAMERA_PIXELS)
    if bad.any():
        i = int(np.argmax(bad))
        raise ContainerError(f"{what} {i} is {w[i]:g} x {h[i]:g} pixels: sizes must be whole numbers >= 1 and at "
                             f"most {MAX_CAMERA_PIXELS:,} pixels")  # fmt: skip


def cameras_from_array(arr: np.ndarray, expected: int) -> Cameras:
    """The stored training cameras, checked: [N, 18] floats, all finite, positive focal lengths, sane sizes."""
    if arr.dtype.kind != "f" or arr.ndim != 2 or arr.shape[1] != CAMERA_RECORD_FLOATS:
        raise ContainerError(f"cameras section is {arr.dtype} {arr.shape}, expected float [N, 18]")
    if arr.shape[0] != expected:
        raise ContainerError(f"cameras section holds {arr.shape[0]} cameras, the header says {expected}")
    if not np.isfinite(arr).all():
        raise ContainerError("cameras section holds non-finite values (NaN or infinity)")
    if not (arr[:, 12:14] > 0).all():
        raise ContainerError("cameras section holds a focal length <= 0")
    check_camera_sizes(arr[:, 16], arr[:, 17], "stored camera")
    t = torch.from_numpy(arr.astype(np.float64))
    return Cameras(
        camera_to_worlds=t[:, :12].reshape(-1, 3, 4).float(),
        fx=t[:, 12:13].float(),
        fy=t[:, 13:14].float(),
        cx=t[:, 14:15].float(),
        cy=t[:, 15:16].float(),
        width=t[:, 16:17].long(),
        height=t[:, 17:18].long(),
    )


def encode_scene(
    model: ShaciraModel,
    cameras: Optional[Cameras] = None,
    dataparser_transform: Optional[Dict[str, Any]] = None,
) -> bytes:
    """The scene file's bytes for a trained model (deterministic: the same model gives the same bytes)."""
    grids = [(name, *encode_grid(grid, name)) for name, grid in model.grids.items()]
    precision = model.config.network_precision
    networks = {name: storage_array(t, precision) for name, t in model.stored_network_tensors().items()}
    fields = {
        "method": "shacira",
        "model_config": config_to_json(model.config),
        "scene_box": model.scene_box.aabb.tolist(),
        "dataparser_transform": dataparser_transform,
        "num_cameras": 0 if cameras is None else len(cameras),
    }
    extra = [] if cameras is None else [("cameras", pack_array(cameras_to_array(cameras)))]
    estimate = {k: round(v, 9) for k, v in model.estimate_size().items()}
    return encode_file(SCENE_KIND, grids, networks, estimate, fields, extra)


def encode_pipeline(pipeline) -> bytes:
    """The scene file of a loaded nerfstudio pipeline: its model, training cameras and dataparser transform.

    ``shacira export`` writes exactly these bytes and ``ns-eval`` reports their length.
    """
    dm = pipeline.datamanager
    cameras = dm.train_dataset.cameras if getattr(dm, "train_dataset", None) is not None else None
    outputs = getattr(dm, "train_dataparser_outputs", None)
    transform = None
    if outputs is not None:
        transform = {"transform": outputs.dataparser_transform.tolist(), "scale": float(outputs.dataparser_scale)}
    return encode_scene(pipeline.model, cameras, transform)


def _scene_box(value: Any) -> torch.Tensor:
    rows = need_list(value, "scene_box", 2)
    box = [[need_number(v, f"scene_box[{i}][{j}]") for j, v in enumerate(need_list(r, f"scene_box[{i}]", 3))]
           for i, r in enumerate(rows)]  # fmt: skip
    if len(box) != 2 or any(len(r) != 3 for r in box) or not all(lo < hi for lo, hi in zip(*box)):
        raise ContainerError(
            f"header scene_box must be [[min x, y, z], [max x, y, z]] with min < max, got {shown(value)}"
        )
    return torch.tensor(box, dtype=torch.float32)


def _build(config: ShaciraModelConfig, aabb: torch.Tensor, device: Union[str, torch.device]) -> ShaciraModel:
    return config.setup(scene_box=SceneBox(aabb=aabb), num_train_data=1, metadata={}, device=device)


def _check_model_budget(
    env: Envelope, config: ShaciraModelConfig, aabb: torch.Tensor, device: Union[str, torch.device]
) -> Tuple[Dict[str, List[int]], Dict[str, Tuple[int, ...]]]:
    """Build the model on the meta device (no memory) and hold it against the file (``check_rebuilt_model``).
    Returns each grid's level sizes and the network tensors' shapes."""
    with torch.device("meta"):
        model = _build(config, aabb.to("meta"), device)
    grids = {name: (grid.geometry.to_dict(), grid.latent_dim) for name, grid in model.grids.items()}
    shapes = {name: tuple(t.shape) for name, t in model.stored_network_tensors().items()}
    total = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    check_rebuilt_model(env, grids, shapes, total)
    for name, grid in model.grids.items():  # the settings rebuild the entropy model that coded each grid
        if env.grids[name].entropy_model != grid.entropy_model.name:
            raise ContainerError(f"grid {name!r} is coded with the {env.grids[name].entropy_model} entropy model, "
                                 f"the settings make {grid.entropy_model.name}")  # fmt: skip
    return {name: grid.geometry.level_sizes for name, grid in model.grids.items()}, shapes


def decode_scene(data: bytes, device: Union[str, torch.device] = "cpu") -> LoadedScene:
    """Rebuild the model from a scene file's bytes (raises a one-line ContainerError on anything malformed).

    Everything is checked from the header and the section lengths before anything is allocated: every value's type
    and range, the model's parameter count (built on the meta device), each grid's latents against what its sections
    can hold, the networks' shapes and the cameras' sizes; then the sections are decoded and checked (finite floats),
    and only then is the model built for real.
    """
    env = read_envelope(data, SCENE_KIND)
    header, sections = env.header, env.sections
    config = config_from_json(header.get("model_config"))
    _check_pass_budget(config)
    aabb = _scene_box(header.get("scene_box"))
    num_cameras = need_int(header.get("num_cameras", 0), "num_cameras", 0, MAX_CAMERAS)
    level_sizes, expected = _check_model_budget(env, config, aabb, device)
    for name, grid_entry in env.grids.items():
        check_grid_budget(grid_entry, sections, name, level_sizes[name])
    networks = read_networks(env, expected)
    cameras = None
    if "cameras" in sections or num_cameras:
        cameras = cameras_from_array(unpack_array(require_section(sections, "cameras")), num_cameras)
    latents = {name: decode_grid(e, sections, name, level_sizes[name]) for name, e in env.grids.items()}
    model = _build(config, aabb, device)
    with torch.no_grad():
        for name, grid in model.grids.items():
            grid.latents.load_integers(torch.from_numpy(latents.pop(name)))
        params = dict(model.named_parameters())
        for name, arr in networks.items():
            params[name].copy_(torch.from_numpy(arr))
    model = model.to(device)
    model.eval()
    return LoadedScene(model=model, header=header, cameras=cameras, file_bytes=len(data))


def load_scene(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> LoadedScene:
    """Read and decode a scene file; errors name the file."""
    with naming(path):
        return decode_scene(read_file_bytes(path), device)
