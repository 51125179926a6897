"""A fitted ImageField <-> a compressed image file (the same ``.shac`` container as scenes, header kind "image").

What the file holds:
- header: ``kind: "image"``, the image size, the field's architecture settings (everything needed to rebuild the
  modules), the grid's coder header under ``grids.grid`` (what ``shacira info`` sums), the list of network tensors
  and the training-time size estimate;
- ``grid/table/<d>`` and ``grid/latents/all``: integer probability tables and the range-coded latents, all levels in
  one stream (``bitstream.py``; per-level sections cost ~30 bytes a level, a tenth of a small image file);
- ``network/<name>``: the latent decoder and the RGB MLP as float16 arrays (``network_precision``; float32 for a
  tensor that float16 would not hold exactly; with "int8", int8 values and a float32 scale,
  ``codec.pack_scaled_int8``), written by ``pack_array``; nothing is pickled.

Decoding rebuilds the field in eval mode with the decoded integer latents; its rendering equals the trained field's
eval rendering bit for bit on the same device (same integers, same float32 weights, same code path). The entropy
model is not stored: its integer tables are, and decoding never evaluates it.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Dict, Union

import torch

from shacira_nerf.bitstream import check_grid_budget, decode_grid, encode_grid
from shacira_nerf.codec import ContainerError, naming, read_file_bytes, write_bytes_atomic
from shacira_nerf.core.precision import storage_array
from shacira_nerf.file_layer import (
    IMAGE_KIND,
    MAX_DIM,
    MAX_LEVELS,
    MAX_RES,
    check_rebuilt_model,
    encode_file,
    image_size,
    need_dict,
    need_keys,
    read_envelope,
    read_networks,
    read_setting,
)
from shacira_nerf.image.field import ARCHITECTURE_FIELDS, ImageConfigError, ImageField, ImageFieldConfig

__all__ = ["GRID_NAME", "IMAGE_KIND", "decode_image_file", "encode_image_file", "read_image_file", "write_image_file"]

GRID_NAME = "grid"
"""Name (section prefix and ``grids`` key) of the image's one grid."""

_SETTING_LIMITS = {"num_levels": (1, MAX_LEVELS), "min_res": (1, MAX_RES), "max_res": (0, MAX_RES),
                   "log2_hashmap_size": (4, 26), "latent_dim": (1, MAX_DIM), "feature_dim": (1, MAX_DIM),
                   "hidden_dim": (1, 4096), "num_hidden_layers": (0, 64), "entropy_filters": (1, MAX_DIM)}  # fmt: skip
"""Ranges of the settings that size the modules (checked before anything is built)."""


def config_to_json(config: ImageFieldConfig) -> Dict[str, Any]:
    """The architecture settings (what rebuilds the modules) and the rate weight it was trained with."""
    out: Dict[str, Any] = {}
    for name in (*ARCHITECTURE_FIELDS, "rate_lambda"):
        value = getattr(config, name)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def config_from_json(values: Any) -> ImageFieldConfig:
    """Rebuild the config, every value checked; unknown keys (a newer writer) are an error, missing ones take
    defaults."""
    values = need_dict(values, "field")
    fields = {f.name: f for f in dataclasses.fields(ImageFieldConfig)}
    need_keys(values, "field", list(fields))
    defaults = ImageFieldConfig()
    kinds = typing.get_type_hints(ImageFieldConfig)  # the annotations are strings (postponed evaluation)
    kwargs = {
        name: read_setting(f"field.{name}", value, getattr(defaults, name), kinds[name],
                           _SETTING_LIMITS.get(name, (0, 2**31 - 1)))
        for name, value in values.items()
    }  # fmt: skip
    try:
        return ImageFieldConfig(**kwargs)
    except ImageConfigError as exc:
        raise ContainerError(f"image header has an invalid setting: {exc}") from None


def encode_image_file(field: ImageField) -> bytes:
    """The image file's bytes (deterministic: the same field gives the same bytes)."""
    grid_header, grid_sections = encode_grid(field.grid, GRID_NAME, whole_table=True)
    precision = field.config.network_precision
    networks = {name: storage_array(t, precision) for name, t in field.network_tensors().items()}
    estimate = field.estimate_bits()
    fields = {"image": {"height": field.height, "width": field.width, "channels": 3},
              "field": config_to_json(field.config)}  # fmt: skip
    size_mb = round((estimate["latent_bits"] + estimate["network_bits"]) / 8e6, 9)
    return encode_file(IMAGE_KIND, [(GRID_NAME, grid_header, grid_sections)], networks,
                       {"bpp": round(estimate["bpp"], 6), "size_MB": size_mb}, fields)  # fmt: skip


def write_image_file(field: ImageField, path: Union[str, Path]) -> int:
    """Write the image file atomically (temporary file, then rename); returns its byte length."""
    return write_bytes_atomic(path, encode_image_file(field))


def decode_image_file(data: bytes, device: Union[str, torch.device] = "cpu") -> ImageField:
    """Rebuild the field from an image file's bytes, in eval mode (raises a one-line ContainerError on bad input).

    As for scenes (``nerf/scene_file.py``): every value is checked, the field is first built on the meta device and
    held against the file, the grid's latents against what its section can hold, the networks for shape, dtype and
    finite values; only then is the field built for real.
    """
    env = read_envelope(data, IMAGE_KIND)
    height, width = image_size(env.header)
    config = config_from_json(env.header.get("field"))
    if config.max_res < 1:
        raise ContainerError("image header has no resolved max_res")
    try:
        with torch.device("meta"):
            meta = ImageField(config, height, width)
    except ValueError as exc:  # GridGeometry's own checks (e.g. min_res > max_res)
        raise ContainerError(f"image header has an invalid setting: {exc}") from None
    shapes = {name: tuple(t.shape) for name, t in meta.network_tensors().items()}
    total = sum(p.numel() for p in meta.parameters()) + sum(b.numel() for b in meta.buffers())
    check_rebuilt_model(env, {GRID_NAME: (meta.grid.geometry.to_dict(), meta.grid.latent_dim)}, shapes, total)
    level_sizes = meta.grid.geometry.level_sizes
    check_grid_budget(env.grids[GRID_NAME], env.sections, GRID_NAME, level_sizes)
    networks = read_networks(env, shapes)
    ints = decode_grid(env.grids[GRID_NAME], env.sections, GRID_NAME, level_sizes)
    field = ImageField(config, height, width)
    field.grid.latents.load_integers(torch.from_numpy(ints))
    with torch.no_grad():
        for name, reference in field.network_tensors().items():
            reference.copy_(torch.from_numpy(networks[name]))
    field = field.to(device)
    field.eval()
    return field


def read_image_file(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> ImageField:
    """Read and decode an image file; errors name the file."""
    with naming(path):
        return decode_image_file(read_file_bytes(path), device)
