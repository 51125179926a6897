"""Files from strangers: hostile files with valid checksums, through the real commands, in one line each.

CRC32 is not authentication: anyone can rewrite a header and re-sign the file. ``craft`` does exactly that, from a
valid scene or image file made here (no training needed), and ``consistent_scene`` / ``consistent_image`` go
further, as a careful attacker would: they change a setting and rewrite every header entry that must agree with it
(grid geometry, latent counts, network shapes, derived from the settings on torch's meta device), so that only the
budget check stands between the file and the allocation.

Every case runs ``shacira`` (``info``, ``render``, ``view``, ``image decompress``) through ``crafted_harness.py``:
one subprocess that imports torch once and forks a child per command, each under ``RLIMIT_AS`` (the parent's
address space + 2 GiB) and a timeout. Each refused case must exit 1 with exactly one stderr line,
``error: <file>: <why>`` naming the file and the value, no traceback, and a peak resident memory at most 2x that of
the same command reading a valid file of the same kind.
"""

from __future__ import annotations

import copy
import json
import math
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

from shacira_nerf.codec import MAGIC, decode_container, encode_container, pack_array, pack_table, unpack_table
from shacira_nerf.file_layer import MAX_IMAGE_PIXELS

HARNESS = Path(__file__).parent / "crafted_harness.py"
MEMORY_FACTOR = 2.0

# ------------------------------------------------------------------------------------------------ valid files


def _small_scene_config(**changes):
    from shacira_nerf.nerf.model import ShaciraModelConfig

    proposal = {"hidden_dim": 8, "log2_hashmap_size": 8, "num_levels": 3, "max_res": 32, "use_linear": False}
    settings = dict(num_levels=4, log2_hashmap_size=10, max_res=64, hidden_dim=16, hidden_dim_color=16,
                    proposal_net_args_list=[dict(proposal), dict(proposal)], implementation="torch")  # fmt: skip
    settings.update(changes)
    config = ShaciraModelConfig(**settings)
    config.camera_optimizer.mode = "off"
    return config


def _integer_latents(grids) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for grid in grids:
            values = grid.latents.values
            values.copy_(torch.randint(-3, 4, values.shape, generator=generator).float())


def valid_scene() -> bytes:
    """A small scene file with two 16x16 cameras (renders in a second on a CPU)."""
    from nerfstudio.cameras.cameras import Cameras
    from nerfstudio.data.scene_box import SceneBox

    from shacira_nerf.nerf.scene_file import encode_scene

    torch.manual_seed(0)
    model = _small_scene_config().setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])),
                                        num_train_data=2, metadata={})  # fmt: skip
    _integer_latents(model.grids.values())
    c2w = torch.eye(4)[:3].repeat(2, 1, 1)
    c2w[:, 2, 3] = 2.5
    cameras = Cameras(camera_to_worlds=c2w, fx=20.0, fy=20.0, cx=8.0, cy=8.0, width=16, height=16)
    return encode_scene(model, cameras)


def valid_image() -> bytes:
    from shacira_nerf.image.field import ImageField, ImageFieldConfig
    from shacira_nerf.image.image_file import encode_image_file

    torch.manual_seed(0)
    field = ImageField(ImageFieldConfig(num_levels=4, log2_hashmap_size=8, implementation="torch"), 24, 32)
    _integer_latents([field.grid])
    field.round_networks()
    return encode_image_file(field)


# ----------------------------------------------------------------------------------------------- the crafter

Edit = Callable[[dict, Dict[str, bytes]], None]


def craft(data: bytes, edit: Edit) -> bytes:
    """Decode a valid file, let ``edit`` change its header and sections in place, re-sign (valid checksums)."""
    header, sections = decode_container(data)
    header, sections = copy.deepcopy(header), dict(sections)
    edit(header, sections)
    return encode_container(header, list(sections.items()))


def with_header_text(data: bytes, text: str) -> bytes:
    """The file's sections under a header given as raw JSON text (for what ``json.dumps`` refuses to write),
    deflated and checksummed like a real version-2 header."""
    valid = bytearray(encode_container({}, list(decode_container(data)[1].items())))
    _, _, _, old_len = struct.unpack_from("<8sHHI", valid, 0)
    rest = bytes(valid[16 + old_len + 4 :])  # section count and sections
    blob = zlib.compress(text.encode("utf-8"), 9)
    return struct.pack("<8sHHI", MAGIC, 2, 0, len(blob)) + blob + struct.pack("<I", zlib.crc32(blob)) + rest


def set_path(*path) -> Edit:
    """Set ``header[k1][k2]... = value`` for ``path = (k1, k2, ..., value)``."""
    keys, value = path[:-1], path[-1]

    def edit(header: dict, sections: Dict[str, bytes]) -> None:
        node = header
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return edit


def set_section(name: str, payload: bytes) -> Edit:
    def edit(header: dict, sections: Dict[str, bytes]) -> None:
        sections[name] = payload

    return edit


def drop_section(name: str) -> Edit:
    def edit(header: dict, sections: Dict[str, bytes]) -> None:
        del sections[name]

    return edit


def map_array(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Edit:
    from shacira_nerf.codec import unpack_array

    def edit(header: dict, sections: Dict[str, bytes]) -> None:
        sections[name] = pack_array(fn(unpack_array(sections[name])))

    return edit


def int8_section(name: str, scale: float, shape=None, cut: int = 0, low: int = -127) -> Edit:
    """Section ``name`` as int8 values (``low``..127, of ``shape`` if given, else the tensor's) with ``scale``, the
    payload ``cut`` bytes short."""
    from shacira_nerf.codec import pack_scaled_int8, unpack_array

    def edit(header: dict, sections: Dict[str, bytes]) -> None:
        size = unpack_array(sections[name]).shape if shape is None else shape
        values = np.linspace(low, 127, math.prod(size)).astype(np.int8).reshape(size)
        payload = pack_scaled_int8(values, scale)
        sections[name] = payload[: len(payload) - cut]

    return edit


def int8_cases(tensor: str, shape: Tuple[int, ...]) -> Dict[str, SceneCase]:
    """Network tensors stored as int8 with a scale that no writer makes: each refused in one line naming the tensor."""
    section, other = f"network/{tensor}", (shape[-1], math.prod(shape[:-1]))
    return {
        "int8 scale NaN": (_edit(int8_section(section, math.nan)), f"'{tensor}' has int8 scale nan", False),
        "int8 scale 0": (_edit(int8_section(section, 0.0)), "has int8 scale 0.0; a scale must be a finite", False),
        "int8 scale -1": (_edit(int8_section(section, -1.0)), "int8 scale -1.0", False),
        "int8 scale infinite": (_edit(int8_section(section, math.inf)), "int8 scale inf", False),
        "int8 scale 2^100": (_edit(int8_section(section, 2.0**100)), "int8 scale 1.2676506002282294e+30", False),
        "int8 scale subnormal": (_edit(int8_section(section, 1e-40)), "int8 scale 9.99994610111476e-41", False),
        "int8 one byte short": (_edit(int8_section(section, 0.01, cut=1)), "with its scale takes", False),
        "int8 without its scale": (_edit(int8_section(section, 0.01, cut=4)), "with its scale takes", False),
        "int8 another shape": (
            _edit(int8_section(section, 0.01, shape=other)),
            f"does not hold an int8 array of shape {shape}",
            False,
        ),
        "int8 twice the numbers": (
            _edit(int8_section(section, 0.01, shape=(2 * shape[0], *shape[1:]))),
            "with its scale takes",
            False,
        ),
        "int8 value -128": (_edit(int8_section(section, 0.01, low=-128)), "holds int8 value -128", False),
    }


def _grid_entries(grids) -> Dict[str, dict]:
    """Header entries (what must agree with the settings) of meta-device grids, by name."""
    return {
        name: {"geometry": g.geometry.to_dict(), "latent_dim": g.latent_dim, "feature_dim": g.feature_dim,
               "num_latents": sum(g.geometry.level_sizes) * g.latent_dim}
        for name, g in grids.items()
    }  # fmt: skip


def _rewrite_grids(header: dict, sections: Dict[str, bytes], grids: Dict[str, dict], levels) -> None:
    """Header entries and sections for the ``grids`` whose geometry changed: the first stored table for every
    dimension, a 4-byte latents section per level (``levels(name)``: the section suffixes)."""
    first_table = next(v for k, v in sections.items() if "/table/" in k)
    for name, entry in grids.items():
        old = header["grids"].get(name, {})
        if old.get("geometry") == entry["geometry"] and old.get("latent_dim") == entry["latent_dim"]:
            continue
        for key in [k for k in sections if k.startswith((f"{name}/table/", f"{name}/latents/"))]:
            del sections[key]
        header["grids"][name] = {**old, **entry}
        for d in range(entry["latent_dim"]):
            sections[f"{name}/table/{d}"] = first_table
        for level in levels(name):
            sections[f"{name}/latents/{level}"] = b"\0\0\0\0"


def _rewrite_networks(header: dict, sections: Dict[str, bytes], shapes: Dict[str, list], dtype) -> None:
    """The header's network shapes and sections (zeros) for the settings; a tensor of more than 2^16 numbers gets no
    section (the attacker's file stays small; the reader must refuse it before allocating the tensor)."""
    header["networks"] = shapes
    for key in [k for k in sections if k.startswith("network/")]:
        del sections[key]
    for name, shape in shapes.items():
        if math.prod(shape) <= 2**16:
            sections[f"network/{name}"] = pack_array(np.zeros(shape, dtype))


def consistent_scene(**changes) -> Edit:
    """Change model settings and everything that must agree with them: grid geometry and counts (the first table
    for every dimension, 4 bytes of latents per level) and network shapes and sections (zeros)."""
    from nerfstudio.data.scene_box import SceneBox

    config = _small_scene_config(**changes)
    with torch.device("meta"):
        model = config.setup(scene_box=SceneBox(aabb=torch.zeros(2, 3)), num_train_data=1, metadata={})
    grids = _grid_entries(model.grids)
    shapes = {name: list(t.shape) for name, t in model.stored_network_tensors().items()}
    level_counts = {name: grid.geometry.num_levels for name, grid in model.grids.items()}

    def edit(header: dict, sections: Dict[str, bytes]) -> None:
        header["model_config"].update({k: (list(v) if isinstance(v, tuple) else v) for k, v in changes.items()})
        _rewrite_grids(header, sections, grids, lambda name: range(level_counts[name]))
        _rewrite_networks(header, sections, shapes, np.float32)

    return edit


def consistent_image(**changes) -> Edit:
    """Change image-field settings (or the size) and everything that must agree with them."""
    from shacira_nerf.image.field import ImageField, ImageFieldConfig

    size = (changes.pop("height", 24), changes.pop("width", 32))
    settings = {"num_levels": 4, "log2_hashmap_size": 8, "implementation": "torch", **changes}
    with torch.device("meta"):
        field = ImageField(ImageFieldConfig(**settings), *size)
    grids = _grid_entries({"grid": field.grid})
    shapes = {name: list(t.shape) for name, t in field.network_tensors().items()}

    def edit(header: dict, sections: Dict[str, bytes]) -> None:
        header["image"].update(height=size[0], width=size[1])
        header["field"].update(changes, max_res=field.config.max_res, min_res=field.config.min_res)
        _rewrite_grids(header, sections, grids, lambda name: ["all"])
        _rewrite_networks(header, sections, shapes, np.float16)

    return edit


# ---------------------------------------------------------------------------------------------------- cases
# name -> (edit or raw-bytes maker, words the error line must contain, whether `info` must refuse it too)
SceneCase = Tuple[Callable[[bytes], bytes], str, bool]


def _edit(edit: Edit) -> Callable[[bytes], bytes]:
    return lambda data: craft(data, edit)


def _text(fn: Callable[[dict], str]) -> Callable[[bytes], bytes]:
    return lambda data: with_header_text(data, fn(decode_container(data)[0]))


def _replace_json(key: str, literal: str) -> Callable[[dict], str]:
    """The header as JSON text with one model setting replaced by a raw literal (Infinity, NaN, 1e999)."""

    def text(header: dict) -> str:
        marker = "__CRAFTED__"
        header = copy.deepcopy(header)
        header["model_config"][key] = marker
        return json.dumps(header).replace(f'"{marker}"', literal)

    return text


def _bomb(header: dict) -> str:
    return json.dumps({**header, "pad": " " * (60 * 2**20)})  # 60 MiB that deflate to ~60 kB


def scene_cases() -> Dict[str, SceneCase]:
    mc = "model_config"
    return {
        # memory: products of settings, each refused from the header alone
        "grid beyond the latent cap": (
            _edit(consistent_scene(num_levels=32, log2_hashmap_size=24, max_res=2**16)),
            "latents, more than the 134,217,728 allowed",
            True,
        ),  # fmt: skip
        "latents the sections cannot hold": (
            _edit(consistent_scene(num_levels=16, log2_hashmap_size=20, max_res=4096)),
            "too short for its",
            False,
        ),
        "colour width 1024": (_edit(consistent_scene(hidden_dim_color=1024)), "missing section 'network/", False),
        "latent dim 10^6": (
            _edit(set_path(mc, "latent_dim", 10**6)),
            "latent_dim must be an integer in [1, 64]",
            False,
        ),
        "entropy filters 10^6 wide": (
            _edit(set_path(mc, "entropy_filters", [10**6, 10**6])),
            "entropy_filters[0]",
            False,
        ),
        "num_levels 10^9": (
            _edit(set_path(mc, "num_levels", 10**9)),
            "num_levels must be an integer in [1, 64]",
            False,
        ),
        "proposal settings 10^9": (
            _edit(set_path(mc, "proposal_net_args_list", [{"num_levels": 10**9}])),
            "proposal_net_args_list[0].num_levels",
            False,
        ),
        "rendering pass": (
            _edit(lambda h, s: h[mc].update(eval_num_rays_per_chunk=2**20, num_nerf_samples_per_ray=4096)),
            "numbers per rendering pass",
            False,
        ),  # fmt: skip
        "camera 10^6 x 10^6": (
            _edit(map_array("cameras", lambda a: _cams(_cams(a, 16, 1e6), 17, 1e6))),
            "pixels",
            False,
        ),
        "camera width 0": (_edit(map_array("cameras", lambda a: _cams(a, 16, 0))), "whole numbers >= 1", False),
        "camera width 2.5": (_edit(map_array("cameras", lambda a: _cams(a, 16, 2.5))), "whole numbers >= 1", False),
        "header inflates to 60 MiB": (_text(_bomb), "inflates to more than the 65536 bytes allowed", True),
        # types and ranges where the header is read
        "model_config a list": (_edit(set_path(mc, [1, 2])), "model_config must be an object", False),
        "hidden_dim text": (
            _edit(set_path(mc, "hidden_dim", "wide")),
            "model_config.hidden_dim must be an integer",
            False,
        ),
        "hidden_dim 1.5": (_edit(set_path(mc, "hidden_dim", 1.5)), "hidden_dim must be an integer", False),
        "hidden_dim true": (_edit(set_path(mc, "hidden_dim", True)), "hidden_dim must be an integer", False),
        "near_plane text": (_edit(set_path(mc, "near_plane", "near")), "near_plane must be a finite number", False),
        "background colour": (
            _edit(set_path(mc, "background_color", "plaid")),
            "background_color must be one of",
            False,
        ),
        "unknown setting": (_edit(set_path(mc, "warp_drive", 9)), "unknown keys", False),
        "collider text": (
            _edit(set_path(mc, "collider_params", {"near_plane": "x"})),
            "collider_params.near_plane",
            False,
        ),
        "no proposal args": (
            _edit(set_path(mc, "proposal_net_args_list", [])),
            "proposal_net_args_list is empty",
            False,
        ),
        "hidden_dim Infinity": (_text(_replace_json("hidden_dim", "Infinity")), "holds Infinity", True),
        "near_plane NaN": (_text(_replace_json("near_plane", "NaN")), "holds NaN", True),
        "far_plane 1e999": (_text(_replace_json("far_plane", "1e999")), "not finite", True),
        "far_plane 10^400": (_edit(set_path(mc, "far_plane", 10**400)), "far_plane must be a finite number", False),
        "scene box text": (_edit(set_path("scene_box", "box")), "scene_box must be a list", False),
        "scene box flat": (_edit(set_path("scene_box", [[0, 0, 0], [0, 1, 1]])), "min < max", False),
        "grids a list": (_edit(set_path("grids", [])), "grids must be an object", True),
        "levels as text": (
            _edit(set_path("grids", "field", "geometry", "num_levels", "4")),
            "grids.field.geometry.num_levels must be an integer",
            True,
        ),  # fmt: skip
        "num_latents lies": (_edit(lambda h, s: h["grids"]["field"].update(num_latents=7)), "claims 7 latents", False),
        "networks text": (
            _edit(set_path("networks", "field.mlp_base.1.layers.0.weight", "big")),
            "must be a list",
            True,
        ),
        "estimate text": (_edit(set_path("estimate", "size_MB", "small")), "estimate.size_MB", True),
        "kind a number": (_edit(set_path("kind", 5)), "kind must be a string", True),
        "producer an object": (_edit(set_path("producer", {"a": 1})), "producer must be a string", True),
        "unknown coder": (_edit(set_path("coder", "rot13")), "coded with", True),
        "num_cameras -1": (_edit(set_path("num_cameras", -1)), "num_cameras must be an integer", False),
        "num_cameras lies": (_edit(set_path("num_cameras", 5)), "the header says 5", False),
        "kind with escapes": (_edit(set_path("kind", "\x1b[31mred")), "[31mred", False),
        # silent garbage
        "NaN weights": (
            _edit(map_array("network/field.mlp_head.layers.0.weight", lambda a: a * np.nan)),
            "non-finite",
            False,
        ),  # fmt: skip
        "integer weights": (
            _edit(map_array("network/field.mlp_head.layers.0.weight", lambda a: a.astype(np.int32))),
            "expected float16 or float32",
            False,
        ),  # fmt: skip
        "NaN camera pose": (_edit(map_array("cameras", lambda a: _set(a, (0, 3), np.nan))), "non-finite", False),
        "integer cameras": (_edit(map_array("cameras", lambda a: a.astype(np.int64))), "expected float", False),
        "focal length 0": (_edit(map_array("cameras", lambda a: _set(a, (0, 12), 0.0))), "focal length", False),
        "table offset 2^40": (
            _edit(lambda h, s: s.update({"field/table/0": _shifted_table(s["field/table/0"])})),
            "outside the latents' range",
            False,
        ),  # fmt: skip
        "unknown entropy model": (
            _edit(set_path("grids", "field", "entropy_model", "context")),
            'grids.field names an unknown entropy model "context"',
            True,
        ),
        "more coding tables than levels x dims": (
            _edit(lambda h, s: h["grids"]["field"].update(entropy_model="per_level", num_tables=999)),
            "claims 999 coding tables; a per_level grid of 4 levels x 2 dimensions has 8",
            True,
        ),  # fmt: skip
        "entropy model not the settings'": (
            _edit(set_path("grids", "field", "entropy_model", "per_level")),
            "coded with the per_level entropy model, the settings make factorized",
            False,
        ),
        "per-level tables missing": (_edit(_per_level_everywhere), "missing section 'field/table/2'", False),
        "missing latents": (_edit(drop_section("field/latents/1")), "missing section 'field/latents/1'", False),
        "missing table": (_edit(drop_section("proposal_0/table/1")), "missing section 'proposal_0/table/1'", False),
        "missing network": (_edit(drop_section("network/field.mlp_head.layers.0.weight")), "missing section", False),
        **int8_cases("field.mlp_head.layers.0.weight", (16, 63)),
    }


def _per_level_everywhere(header: dict, sections: Dict[str, bytes]) -> None:
    """Settings and every grid entry say per_level; the sections are still the factorized file's (2 tables)."""
    header["model_config"]["entropy_model"] = "per_level"
    for entry in header["grids"].values():
        entry["entropy_model"] = "per_level"


def _cams(arr: np.ndarray, column: int, value: float) -> np.ndarray:
    return _set(arr, (slice(None), column), value)


def _set(arr: np.ndarray, index, value) -> np.ndarray:
    arr = arr.copy()
    arr[index] = value
    return arr


def _shifted_table(payload: bytes) -> bytes:
    t = unpack_table(payload)
    return pack_table(type(t)(2**40, t.freqs, t.precision))


def image_cases() -> Dict[str, SceneCase]:
    return {
        "image 2^20 x 2^20": (
            _edit(consistent_image(height=2**20, width=2**20, max_res=512)),
            f"more than the {MAX_IMAGE_PIXELS:,} allowed",
            True,
        ),  # fmt: skip
        "image at the pixel cap, 12 kB": (
            _edit(consistent_image(height=2**13 + 1, width=2**13, max_res=512)),
            "pixels, more than the",
            True,
        ),  # fmt: skip
        "image height 0": (_edit(set_path("image", "height", 0)), "image.height must be an integer in [1,", True),
        "image height text": (_edit(set_path("image", "height", "24")), "image.height must be an integer", True),
        "image a list": (_edit(set_path("image", [24, 32])), "image must be an object", True),
        "field a list": (_edit(set_path("field", [])), "field must be an object", False),
        "hidden 10^6": (_edit(set_path("field", "hidden_dim", 10**6)), "field.hidden_dim must be an integer", False),
        "wide deep MLP": (_edit(consistent_image(hidden_dim=4096, num_hidden_layers=64)), "missing section", False),
        "levels beyond the latent cap": (
            _edit(consistent_image(num_levels=64, log2_hashmap_size=26, max_res=2**20)),
            "more than the 134,217,728 allowed",
            True,
        ),  # fmt: skip
        "latents the section cannot hold": (
            _edit(consistent_image(num_levels=24, log2_hashmap_size=20, max_res=2**14)),
            "too short for its",
            False,
        ),
        "NaN weights": (_edit(map_array("network/mlp.0.weight", lambda a: a * np.nan)), "non-finite", False),
        "integer weights": (
            _edit(map_array("network/mlp.0.weight", lambda a: a.astype(np.int16))),
            "expected float16 or float32",
            False,
        ),  # fmt: skip
        "table offset 2^40": (
            _edit(lambda h, s: s.update({"grid/table/0": _shifted_table(s["grid/table/0"])})),
            "outside the latents' range",
            False,
        ),  # fmt: skip
        "missing latents": (_edit(drop_section("grid/latents/all")), "missing section 'grid/latents/all'", False),
        **int8_cases("mlp.0.weight", (16, 4)),
        "header inflates to 60 MiB": (
            _text(lambda h: json.dumps({**h, "pad": " " * (60 * 2**20)})),
            "inflates to more than",
            True,
        ),  # fmt: skip
        "unknown stream layout": (
            _edit(set_path("grids", "grid", "latent_streams", "zigzag")),
            "unknown latent stream layout",
            True,
        ),  # fmt: skip
    }


# -------------------------------------------------------------------------------------------------- running


def run_harness(cases: List[dict], tmp_path: Path) -> Dict[str, dict]:
    """Run the jobs through the harness; each result also carries ``floor_rss_kb``: the peak of a child that only
    fails to find a file, the resident size every forked child starts from."""
    cases = [{"name": "floor", "argv": ["info", str(tmp_path / "no such file.shac")]}, *cases]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "NO_COLOR": "1", "COLUMNS": "200", "CRAFTED_TIMEOUT_S": "60"}  # fmt: skip
    proc = subprocess.run([sys.executable, str(HARNESS), str(tmp_path / "cases.json"), str(tmp_path / "out.json")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out.json").read_text())
    results = {r["name"]: r for r in report["results"]}
    floor = results.pop("floor")["peak_rss_kb"]
    return {name: {**r, "floor_rss_kb": floor} for name, r in results.items()}


def _assert_refused(result: dict, path: Path, words: str, valid: dict) -> None:
    """One line naming the file and containing ``words``, exit 1, no traceback, no escape byte; peak memory at most
    2x the same command on a valid file, both as a whole process and above the resident size it was forked with."""
    name, err = result["name"], result["stderr"]
    assert result["rc"] == 1, (name, result["rc"], err[-2000:])
    assert "Traceback" not in err, (name, err[-3000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1, (name, err[-2000:])
    assert lines[0].startswith(f"error: {path}: "), (name, lines[0])
    assert words in lines[0], (name, words, lines[0])
    assert "\x1b" not in err, name
    peak, base = result["peak_rss_kb"], result["floor_rss_kb"]
    assert peak <= MEMORY_FACTOR * valid["peak_rss_kb"], (name, peak, valid["peak_rss_kb"])
    assert peak - base <= MEMORY_FACTOR * (valid["peak_rss_kb"] - base) + 16 * 1024, (name, peak, base, valid)


def _write_cases(folder: Path, base: bytes, cases: Dict[str, SceneCase]) -> Dict[str, Path]:
    folder.mkdir()
    paths = {}
    for i, (name, (make, _, _)) in enumerate(cases.items()):
        paths[name] = folder / f"case{i:02d}.shac"
        paths[name].write_bytes(make(base))
    return paths


def _summary(results: Dict[str, dict]) -> str:
    return "; ".join(f"{r['name']}: rc {r['rc']}, {r['peak_rss_kb'] / 1024:.0f} MB, {r['seconds']:.2f} s"
                     for r in results.values())  # fmt: skip


def test_crafted_scene_files_are_refused_in_one_line(tmp_path: Path) -> None:
    base = valid_scene()
    (tmp_path / "valid.shac").write_bytes(base)
    cases = scene_cases()
    paths = _write_cases(tmp_path / "crafted", base, cases)
    out = tmp_path / "frames"
    jobs = [
        {"name": "valid render", "argv": ["render", "valid.shac", "--output-path", str(out), "--device", "cpu"]},
        {"name": "valid info", "argv": ["info", "valid.shac"]},
        {"name": "valid info json", "argv": ["info", "valid.shac", "--json"]},
    ]
    for name, path in paths.items():
        jobs.append({"name": f"render {name}", "argv": ["render", str(path), "--output-path", str(tmp_path / "x"),
                                                        "--device", "cpu"]})  # fmt: skip
        jobs.append({"name": f"view {name}", "argv": ["view", str(path), "--device", "cpu", "--max-seconds", "1"]})
        jobs.append({"name": f"info {name}", "argv": ["info", str(path)]})
        jobs.append({"name": f"info --json {name}", "argv": ["info", str(path), "--json"]})
    results = run_harness(jobs, tmp_path)
    print(_summary(results))
    for name in ("valid render", "valid info", "valid info json"):
        assert results[name]["rc"] == 0, results[name]["stderr"][-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png"]
    render, info = results["valid render"], results["valid info"]
    for name, (_, words, info_refuses) in cases.items():
        _assert_refused(results[f"render {name}"], paths[name], words, render)
        _assert_refused(results[f"view {name}"], paths[name], words, render)
        for command in ("info", "info --json"):
            result = results[f"{command} {name}"]
            if info_refuses or result["rc"] != 0:  # info reads the envelope, not the model settings
                _assert_refused(result, paths[name], "" if not info_refuses else words, info)
            else:
                assert "Traceback" not in result["stderr"] and "\x1b" not in result["stdout"], (name, result)
    assert not (tmp_path / "x").exists()


def test_crafted_image_files_are_refused_in_one_line(tmp_path: Path) -> None:
    base = valid_image()
    assert len(base) < 12_000
    (tmp_path / "valid.shac").write_bytes(base)
    cases = image_cases()
    paths = _write_cases(tmp_path / "crafted", base, cases)
    jobs = [
        {"name": "valid decompress", "argv": ["image", "decompress", "valid.shac", "v.png", "--device", "cpu"]},
        {"name": "valid info", "argv": ["info", "valid.shac"]},
    ]
    for name, path in paths.items():
        jobs.append(
            {
                "name": f"decompress {name}",
                "argv": ["image", "decompress", str(path), str(tmp_path / "x.png"), "--device", "cpu"],
            }
        )
        jobs.append({"name": f"info {name}", "argv": ["info", str(path), "--json"]})  # fmt: skip
    results = run_harness(jobs, tmp_path)
    print(_summary(results))
    assert results["valid decompress"]["rc"] == 0, results["valid decompress"]["stderr"][-3000:]
    assert (tmp_path / "v.png").stat().st_size > 0
    for name, (_, words, info_refuses) in cases.items():
        _assert_refused(results[f"decompress {name}"], paths[name], words, results["valid decompress"])
        result = results[f"info {name}"]
        if info_refuses or result["rc"] != 0:
            _assert_refused(result, paths[name], words if info_refuses else "", results["valid info"])
    assert not (tmp_path / "x.png").exists()


# -------------------------------------------------------------------------------------------- random fuzzing
FUZZ_VALUES = [None, True, False, -1, 0, 1, 3, 2**31, 2**63, 10**30, 10**400, -1e308, 1e-300, 0.5, "", "x", "\x1b[2J",
               [], {}, [0, 0, 0], [[-1, -1, -1], [1, 1, 1]], {"a": 1}]  # fmt: skip


def _leaves(node, path=()) -> List[tuple]:
    """Every path into a header (containers and leaves alike)."""
    out = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _leaves(value, (*path, i))
    return out


def fuzzed(data: bytes, count: int, seed: int) -> List[bytes]:
    """``count`` re-signed copies of a valid file, each with one to three header values replaced at random (any
    depth, any type: the header is what a stranger controls)."""
    rng = np.random.default_rng(seed)
    header = decode_container(data)[0]
    paths = _leaves(header)
    out = []
    for _ in range(count):
        picks = [paths[int(i)] for i in rng.choice(len(paths), size=int(rng.integers(1, 4)), replace=False)]

        def edit(h: dict, s: Dict[str, bytes], picks=picks) -> None:
            for path in picks:
                node = h
                try:
                    for key in path[:-1]:
                        node = node[key]
                    node[path[-1]] = copy.deepcopy(FUZZ_VALUES[int(rng.integers(len(FUZZ_VALUES)))])
                except (KeyError, IndexError, TypeError):  # an earlier pick replaced a container on this path
                    pass

        out.append(craft(data, edit))
    return out


def _assert_clean(result: dict) -> None:
    """Either it worked, or one error line naming the file; never a traceback."""
    err = result["stderr"]
    assert "Traceback" not in err and "\x1b" not in err + result["stdout"], (result["name"], err[-3000:])
    if result["rc"] != 0:
        assert result["rc"] == 1 and len(err.strip().splitlines()) == 1, (result["name"], err[-2000:])
        assert err.startswith(f"error: {result['argv'][1 if result['argv'][0] != 'image' else 2]}: "), err


def test_random_header_values_work_or_fail_in_one_line(tmp_path: Path) -> None:
    """Random replacements of header values (scene: 100 files, image: 60) through render / image decompress and
    info: each either works or is one error line; none prints a traceback, runs out of memory or hangs."""
    jobs = []
    for kind, base, count in (("scene", valid_scene(), 100), ("image", valid_image(), 60)):
        for i, data in enumerate(fuzzed(base, count, seed=7)):
            path = tmp_path / f"{kind}{i:03d}.shac"
            path.write_bytes(data)
            if kind == "scene":
                out = ["--output-path", str(tmp_path / f"frames{i}"), "--max-frames", "1", "--device", "cpu"]
                jobs.append({"name": f"render {path.name}", "argv": ["render", str(path), *out]})
            else:
                argv = ["image", "decompress", str(path), str(tmp_path / f"{path.stem}.png"), "--device", "cpu"]
                jobs.append({"name": f"decompress {path.name}", "argv": argv})
            jobs.append({"name": f"info {path.name}", "argv": ["info", str(path)]})
    results = run_harness(jobs, tmp_path)
    for result in results.values():
        _assert_clean(result)
    refused = sum(r["rc"] != 0 for r in results.values())
    print(f"{len(results)} runs, {refused} refused in one line, {len(results) - refused} worked")
    assert refused > len(results) // 2  # most random values are wrong somewhere: the checks are exercised
