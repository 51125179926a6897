"""A trained shacira model <-> the self-describing compressed scene file (``.shac``), and nothing about bytes.

What the file holds (sections of the container in ``codec/container.py``):
- header: the model config needed to rebuild the field, the scene box, the dataparser transform, every grid's
  geometry and coder parameters, the list of network tensors, and the training-time size estimate;
- ``<grid>/table/<d>`` and ``<grid>/latents/<level>``: integer probability tables and range-coded latents
  (``bitstream.py``) for the main field and every proposal network;
- ``network/<name>``: decoder, MLP and appearance weights as float32 arrays (the appearance embedding reduced to
  its mean, all that novel views use);
- ``cameras``: the training cameras (poses and intrinsics) so that the viewer can show them without the dataset.

Loading rebuilds a ``ShaciraModel`` in eval mode with the decoded integer latents, on any device.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import SceneBox

from shacira_nerf import __version__
from shacira_nerf.bitstream import decode_grid, encode_grid
from shacira_nerf.codec import (
    CODER_NAME,
    ContainerError,
    decode_container,
    encode_container,
    pack_array,
    read_file_bytes,
    require_kind,
    unpack_array,
)
from shacira_nerf.nerf.model import ShaciraModel, ShaciraModelConfig

SCENE_KIND = "nerfstudio-scene"
"""Header ``kind`` of scene files (image files say "image")."""

_SKIPPED_CONFIG_FIELDS = {"_target", "camera_optimizer"}


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


def config_from_json(values: Dict[str, Any]) -> ShaciraModelConfig:
    """Rebuild the model config; unknown keys (a newer writer) are an error, missing ones take defaults."""
    known = {f.name: f for f in dataclasses.fields(ShaciraModelConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ContainerError(f"scene header has unknown model settings {unknown} (written by a newer shacira-nerf?)")
    kwargs = {}
    for name, value in values.items():
        default = getattr(ShaciraModelConfig(), name)
        kwargs[name] = tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value
    # The lookup backend is how training ran, not part of the scene: decode with the fastest tested one here
    # (a file trained with "tcnn" or "triton" on a GPU renders on a CPU).
    kwargs["implementation"] = "auto"
    config = ShaciraModelConfig(**kwargs)
    config.camera_optimizer.mode = "off"
    return config


def cameras_to_array(cameras: Cameras) -> np.ndarray:
    """[N, 18] float64: camera-to-world 3x4 (row-major), fx, fy, cx, cy, width, height."""
    c2w = cameras.camera_to_worlds.reshape(-1, 12).double()
    intr = torch.cat(
        [cameras.fx, cameras.fy, cameras.cx, cameras.cy, cameras.width.double(), cameras.height.double()], dim=-1
    ).reshape(-1, 6)
    return torch.cat([c2w, intr.double()], dim=-1).cpu().numpy()


def cameras_from_array(arr: np.ndarray) -> Cameras:
    if arr.ndim != 2 or arr.shape[1] != 18:
        raise ContainerError(f"cameras section has shape {arr.shape}, expected [N, 18]")
    t = torch.from_numpy(arr)
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
    sections: List[Tuple[str, bytes]] = []
    grids = {}
    for name, grid in model.grids.items():
        grid_header, grid_sections = encode_grid(grid, name)
        grids[name] = grid_header
        sections.extend(grid_sections)
    networks = {}
    for name, tensor in model.stored_network_tensors().items():
        arr = tensor.detach().float().cpu().numpy()
        networks[name] = list(arr.shape)
        sections.append((f"network/{name}", pack_array(arr)))
    if cameras is not None:
        sections.append(("cameras", pack_array(cameras_to_array(cameras))))
    estimate = model.estimate_size()
    header = {
        "kind": SCENE_KIND,
        "producer": f"shacira-nerf {__version__}",
        "method": "shacira",
        "model_config": config_to_json(model.config),
        "scene_box": model.scene_box.aabb.tolist(),
        "dataparser_transform": dataparser_transform,
        "coder": CODER_NAME,
        "grids": grids,
        "networks": networks,
        "num_cameras": 0 if cameras is None else len(cameras),
        "estimate": {k: round(v, 9) for k, v in estimate.items()},
    }
    return encode_container(header, sections)


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


def decode_scene(data: bytes, device: Union[str, torch.device] = "cpu") -> LoadedScene:
    """Rebuild the model from a scene file's bytes (raises ContainerError on anything malformed)."""
    header, sections = decode_container(data)
    require_kind(header, SCENE_KIND)
    try:
        config = config_from_json(header["model_config"])
        aabb = torch.tensor(header["scene_box"], dtype=torch.float32)
        model = config.setup(scene_box=SceneBox(aabb=aabb), num_train_data=1, metadata={}, device=device)
        for name, grid in model.grids.items():
            grid_header = header["grids"][name]
            if grid_header["geometry"] != grid.geometry.to_dict():
                raise ContainerError(f"grid '{name}' geometry in header does not match its model settings")
            ints = decode_grid(grid_header, sections, name, grid.geometry.level_sizes)
            grid.latents.load_integers(torch.from_numpy(ints))
        params = dict(model.named_parameters())
        expected = model.stored_network_tensors()
        if set(header["networks"]) != set(expected):
            raise ContainerError("network tensors listed in the header do not match the model settings")
        with torch.no_grad():
            for name, reference in expected.items():
                arr = unpack_array(sections.get(f"network/{name}", b""))
                if tuple(arr.shape) != tuple(reference.shape):
                    raise ContainerError(
                        f"network tensor '{name}' has shape {arr.shape}, expected {tuple(reference.shape)}"
                    )
                params[name].copy_(torch.from_numpy(arr))
        cameras = cameras_from_array(unpack_array(sections["cameras"])) if "cameras" in sections else None
    except ContainerError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ContainerError(f"malformed scene header or section: {type(exc).__name__}: {exc}") from None
    model = model.to(device)
    model.eval()
    return LoadedScene(model=model, header=header, cameras=cameras, file_bytes=len(data))


def load_scene(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> LoadedScene:
    """Read and decode a scene file."""
    return decode_scene(read_file_bytes(path), device)
