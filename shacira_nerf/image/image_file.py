"""A fitted ImageField <-> a compressed image file (the same ``.shac`` container as scenes, header kind "image").

What the file holds:
- header: ``kind: "image"``, the image size, the field's architecture settings (everything needed to rebuild the
  modules), the grid's coder header under ``grids.grid`` (what ``shacira info`` sums), the list of network tensors
  and the training-time size estimate;
- ``grid/table/<d>`` and ``grid/latents/all``: integer probability tables and the range-coded latents, all levels in
  one stream (``bitstream.py``; per-level sections cost ~30 bytes a level, a tenth of a small image file);
- ``network/<name>``: the latent decoder and the RGB MLP as float16 arrays (``network_precision``; float32 for a
  tensor that float16 would not hold exactly), written by ``pack_array``; nothing is pickled.

Decoding rebuilds the field in eval mode with the decoded integer latents; its rendering equals the trained field's
eval rendering bit for bit on the same device (same integers, same float32 weights, same code path). The entropy
model is not stored: its integer tables are, and decoding never evaluates it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import numpy as np
import torch

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
    write_container,
)
from shacira_nerf.image.field import ARCHITECTURE_FIELDS, ImageConfigError, ImageField, ImageFieldConfig

IMAGE_KIND = "image"
"""Header ``kind`` of image files (scene files say "nerfstudio-scene")."""

GRID_NAME = "grid"
"""Name (section prefix and ``grids`` key) of the image's one grid."""

MAX_SIDE = 2**20
"""Largest image side a header may claim (guards the rebuild against absurd sizes in damaged files)."""

_SETTING_LIMITS = {"num_levels": 64, "latent_dim": 64, "feature_dim": 64, "hidden_dim": 4096, "num_hidden_layers": 64}
"""Largest values a header may claim for settings that size the modules built before the sections are checked."""


def config_to_json(config: ImageFieldConfig) -> Dict[str, Any]:
    """The architecture settings (what rebuilds the modules) and the rate weight it was trained with."""
    out: Dict[str, Any] = {}
    for name in (*ARCHITECTURE_FIELDS, "rate_lambda"):
        value = getattr(config, name)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def config_from_json(values: Dict[str, Any]) -> ImageFieldConfig:
    """Rebuild the config; unknown keys (a newer writer) are an error, missing ones take defaults."""
    if not isinstance(values, dict):
        raise ContainerError("image header 'field' is not an object")
    known = {f.name for f in dataclasses.fields(ImageFieldConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ContainerError(f"image header has unknown field settings {unknown} (written by a newer shacira-nerf?)")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return ImageFieldConfig(**kwargs)
    except ImageConfigError as exc:
        raise ContainerError(f"image header has an invalid setting: {exc}") from None


def storage_array(tensor: torch.Tensor, precision: str) -> np.ndarray:
    """A network tensor as the file stores it: in ``precision`` if that holds it exactly, else float32 (so that a
    field whose weights were not rounded, ``ImageField.round_networks``, still decodes bit-exactly)."""
    arr = tensor.detach().float().cpu().numpy()
    narrow = arr.astype(np.dtype(precision))
    return narrow if np.array_equal(narrow.astype(np.float32), arr) else arr


def _header_and_sections(field: ImageField) -> Tuple[Dict[str, Any], List[Tuple[str, bytes]]]:
    grid_header, sections = encode_grid(field.grid, GRID_NAME, whole_table=True)
    networks = {}
    for name, tensor in field.network_tensors().items():
        arr = storage_array(tensor, field.config.network_precision)
        networks[name] = list(arr.shape)
        sections.append((f"network/{name}", pack_array(arr)))
    estimate = field.estimate_bits()
    header = {
        "kind": IMAGE_KIND,
        "producer": f"shacira-nerf {__version__}",
        "image": {"height": field.height, "width": field.width, "channels": 3},
        "field": config_to_json(field.config),
        "coder": CODER_NAME,
        "grids": {GRID_NAME: grid_header},
        "networks": networks,
        "estimate": {
            "bpp": round(estimate["bpp"], 6),
            "size_MB": round((estimate["latent_bits"] + estimate["network_bits"]) / 8e6, 9),
        },
    }
    return header, sections


def encode_image_file(field: ImageField) -> bytes:
    """The image file's bytes (deterministic: the same field gives the same bytes)."""
    header, sections = _header_and_sections(field)
    return encode_container(header, sections)


def write_image_file(field: ImageField, path: Union[str, Path]) -> int:
    """Write the image file atomically (temporary file, then rename); returns its byte length."""
    header, sections = _header_and_sections(field)
    return write_container(path, header, sections)


def decode_image_file(data: bytes, device: Union[str, torch.device] = "cpu") -> ImageField:
    """Rebuild the field from an image file's bytes, in eval mode (raises a one-line ContainerError on bad input)."""
    header, sections = decode_container(data)
    require_kind(header, IMAGE_KIND)
    try:
        height, width = int(header["image"]["height"]), int(header["image"]["width"])
        if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
            raise ContainerError(f"image header has an invalid size {height}x{width}")
        config = config_from_json(header["field"])
        for name, limit in _SETTING_LIMITS.items():
            if getattr(config, name) > limit:
                raise ContainerError(f"image header has {name} = {getattr(config, name)} (at most {limit} supported)")
        if config.max_res < 1:
            raise ContainerError("image header has no resolved max_res")
        field = ImageField(config, height, width)
        grid_header = header["grids"][GRID_NAME]
        if grid_header["geometry"] != field.grid.geometry.to_dict():
            raise ContainerError("grid geometry in the header does not match the field settings")
        if int(grid_header["latent_dim"]) != config.latent_dim:
            raise ContainerError("grid latent_dim in the header does not match the field settings")
        ints = decode_grid(grid_header, sections, GRID_NAME, field.grid.geometry.level_sizes)
        field.grid.latents.load_integers(torch.from_numpy(ints))
        expected = field.network_tensors()
        if set(header["networks"]) != set(expected):
            raise ContainerError("network tensors listed in the header do not match the field settings")
        with torch.no_grad():
            for name, reference in expected.items():
                if f"network/{name}" not in sections:
                    raise ContainerError(f"file is missing section 'network/{name}'")
                arr = unpack_array(sections[f"network/{name}"])
                if arr.dtype not in (np.float16, np.float32) or tuple(arr.shape) != tuple(reference.shape):
                    raise ContainerError(
                        f"network tensor '{name}' is {arr.dtype} {arr.shape}, expected float {tuple(reference.shape)}"
                    )
                reference.copy_(torch.from_numpy(arr.astype(np.float32)))
    except ContainerError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ContainerError(f"malformed image header or section: {type(exc).__name__}: {exc}") from None
    field = field.to(device)
    field.eval()
    return field


def read_image_file(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> ImageField:
    """Read and decode an image file."""
    return decode_image_file(read_file_bytes(path), device)
