"""The file layer shared by scene and image files: one envelope, one writer, one reader; torch-free.

Both kinds of ``.shac`` file are a container (``codec/container.py``) whose JSON header starts with the same
envelope: ``kind``, ``producer``, ``coder``, ``grids`` (each grid's geometry and coder header, ``bitstream.py``),
``networks`` (name -> shape of each network tensor in a ``network/<name>`` section: float16, float32, or int8
values followed by their float32 scale) and ``estimate`` (the training-time size estimate). The application adds its own fields (a scene's model settings and scene box, an image's size and
field settings) and sections (a scene's cameras).

A file is data from strangers: checksums catch damage, not intent. So every value of the envelope is checked for
type and range here, where the header is read, with a one-line error that names the value and its limit; the
application's readers do the same for their own fields (``nerf/scene_file.py``, ``image/image_file.py``) and check
the budget of everything they would allocate, from the header alone, before building anything (the limits below).
"""

from __future__ import annotations

import contextlib
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from shacira_nerf import __version__
from shacira_nerf.codec import (
    CODER_NAME,
    INT8_LEVELS,
    MAX_INT8_SCALE,
    MIN_INT8_SCALE,
    ContainerError,
    ForeignFileError,
    decode_container,
    dequantize_int8,
    encode_container,
    escape,
    is_scaled_int8,
    naming,
    pack_array,
    pack_scaled_int8,
    read_file_bytes,
    unpack_array,
    unpack_scaled_int8,
)

SCENE_KIND = "nerfstudio-scene"
"""Header ``kind`` of scene files."""
IMAGE_KIND = "image"
"""Header ``kind`` of image files."""
KINDS: Dict[str, Tuple[str, str]] = {
    SCENE_KIND: ("a scene file", "a scene: use `shacira render` or `shacira view`"),
    IMAGE_KIND: ("an image file", "an image: use `shacira image decompress`"),
}
"""Each kind's name in messages, and what to do with such a file."""

PRODUCER = f"shacira-nerf {__version__}"

# ---------------------------------------------------------------------------------------------------- limits
MAX_LATENTS = 2**27
"""Most latents (rows x latent dimension, all grids) a file may claim: 134 M, 8x the nerfacto-sized ``shacira``
preset (about 17 M); decoding one costs about 20 bytes, so at most ~2.7 GB."""
MAX_LEVELS = 64
"""Most resolution levels of a grid (presets: 5 to 24)."""
MAX_RES = 2**20
"""Largest grid resolution a header may claim (presets: up to 2048)."""
MAX_DIM = 64
"""Largest latent or feature dimension per level (presets: 1, 2 and 4)."""
MAX_GRIDS = 16
"""Most grids in a file (a scene: the field and up to a few proposal networks)."""
MAX_NETWORK_TENSORS = 1024
"""Most network tensors a header may list (a scene has about 25)."""
MAX_TENSOR_DIMS = 8
MAX_NAME = 256
"""Longest string (a name, the producer) a header may hold where a name belongs."""
MAX_LATENT_VALUE = 2**24
"""Largest magnitude of a coded latent: integers up to 2^24 are exact in float32, the latents' dtype."""
MAX_SIDE = 2**20
"""Largest image side a header may claim."""
MAX_IMAGE_PIXELS = 2**26
"""Largest image (height x width) a header may claim, and the largest picture ``shacira image decompress`` renders:
67 M pixels (8192 x 8192; Kodak is 0.4 M). Rendering costs about 16 bytes a pixel, so at most ~1 GB."""
MAX_UNSTORED_PARAMETERS = 2**20
"""Most parameters a rebuilt model may have beyond those the file stores (latents and network tensors): the
entropy models and the like, about 300 in a nerfacto-sized scene. Anything more would be memory no byte of the
file accounts for."""


# -------------------------------------------------------------------------------------------- value checks
def shown(value: Any) -> str:
    """A header value as a message shows it: short, escaped JSON."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return escape(text if len(text) <= 60 else text[:57] + "...")


def need_dict(value: Any, what: str) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise ContainerError(f"header {what} must be an object, got {shown(value)}")
    return value


def need_list(value: Any, what: str, max_len: int) -> List[Any]:
    if not isinstance(value, list):
        raise ContainerError(f"header {what} must be a list, got {shown(value)}")
    if len(value) > max_len:
        raise ContainerError(f"header {what} has {len(value)} entries, more than the {max_len} allowed")
    return value


def need_int(value: Any, what: str, lo: int, hi: int) -> int:
    """An integer in ``[lo, hi]`` (JSON ``true`` is not an integer, nor is ``2.0``)."""
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ContainerError(f"header {what} must be an integer in [{lo}, {hi}], got {shown(value)}")
    return value


def need_number(value: Any, what: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite number in ``[lo, hi]``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (isinstance(value, float) or -(2**1000) < value < 2**1000)  # a JSON integer may exceed float64
    if not ok or not math.isfinite(value) or not lo <= value <= hi:
        limits = "a finite number" if (lo, hi) == (-math.inf, math.inf) else f"a number in [{lo:g}, {hi:g}]"
        raise ContainerError(f"header {what} must be {limits}, got {shown(value)}")
    return float(value)


def need_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ContainerError(f"header {what} must be true or false, got {shown(value)}")
    return value


def need_str(value: Any, what: str, max_len: int = MAX_NAME) -> str:
    if not isinstance(value, str):
        raise ContainerError(f"header {what} must be a string, got {shown(value)}")
    if len(value) > max_len:
        raise ContainerError(f"header {what} is {len(value)} characters, more than the {max_len} allowed")
    return value


def need_keys(values: Mapping[str, Any], what: str, known: Sequence[str]) -> None:
    """Refuse keys this build does not know (a newer writer, or a hostile one)."""
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ContainerError(f"header {what} has unknown keys {shown(unknown)} (written by a newer shacira-nerf?)")


def read_setting(what: str, value: Any, default: Any, kind: Any, int_range: Tuple[int, int] = (0, 2**31 - 1)) -> Any:
    """One application setting from a header, checked against the type of its dataclass default: a Literal's
    choices, bool, int (in ``int_range``; for a tuple default, each item), finite float, short str, a dict of finite
    numbers, or None or a value for an optional bool or string."""
    if typing.get_origin(kind) is typing.Literal:
        if value not in typing.get_args(kind):
            raise ContainerError(f"header {what} must be one of {typing.get_args(kind)}, got {shown(value)}")
        return value
    if default is None:  # an Optional setting: None, or a value of its one other type (bool or str)
        if value is None:
            return None
        return need_bool(value, what) if bool in typing.get_args(kind) else need_str(value, what)
    if isinstance(default, bool):
        return need_bool(value, what)
    if isinstance(default, int):
        return need_int(value, what, *int_range)
    if isinstance(default, float):
        return need_number(value, what)
    if isinstance(default, str):
        return need_str(value, what, 64)
    if isinstance(default, dict):
        values = need_dict(value, what)
        return {need_str(k, f"{what} key", 64): need_number(v, f"{what}.{escape(k)}") for k, v in values.items()}
    if isinstance(default, tuple) and all(isinstance(v, int) for v in default):
        items = need_list(value, what, 16)
        return tuple(need_int(v, f"{what}[{i}]", *int_range) for i, v in enumerate(items))
    raise ContainerError(f"header {what} is not a setting a file may hold")


# ------------------------------------------------------------------------------------------------ envelope
GEOMETRY_KEYS = ("dim", "num_levels", "min_res", "max_res", "log2_hashmap_size")
LATENT_STREAMS = ("per_level", "whole_table")
ENTROPY_MODELS = ("factorized", "per_level")
"""Entropy models a grid entry may name (``core.entropy_model.ENTROPY_MODELS``; a file without the key: factorized)."""


def entropy_tables(model: str, num_levels: int, latent_dim: int) -> int:
    """Coding tables a grid stores under ``model``: one per latent dimension, or one per (level, dimension)."""
    return latent_dim if model == "factorized" else num_levels * latent_dim


@dataclass(frozen=True)
class GridEntry:
    """One grid's header entry (what ``bitstream.encode_grid`` writes), checked."""

    geometry: Dict[str, int]
    latent_dim: int
    feature_dim: int
    num_latents: int
    shannon_bits: float
    latent_streams: str
    entropy_model: str
    """Which entropy model's tables code the latents (files written before the key: factorized)."""
    num_tables: int
    """Coding tables the grid stores (``<grid>/table/<i>``, ``entropy_tables``)."""


def read_grid_entry(name: str, value: Any) -> GridEntry:
    what = f"grids.{name}"
    entry = need_dict(value, what)
    need_keys(entry, what, ("geometry", "latent_dim", "feature_dim", "num_latents", "shannon_bits", "latent_streams",
                            "entropy_model", "num_tables"))  # fmt: skip
    geometry = need_dict(entry.get("geometry"), f"{what}.geometry")
    need_keys(geometry, f"{what}.geometry", GEOMETRY_KEYS)
    limits = {"dim": (2, 3), "num_levels": (1, MAX_LEVELS), "min_res": (1, MAX_RES), "max_res": (1, MAX_RES),
              "log2_hashmap_size": (4, 26)}  # fmt: skip
    checked = {key: need_int(geometry.get(key), f"{what}.geometry.{key}", *limits[key]) for key in GEOMETRY_KEYS}
    if checked["min_res"] > checked["max_res"]:
        raise ContainerError(f"header {what}.geometry has min_res {checked['min_res']} > max_res {checked['max_res']}")
    latent_dim = need_int(entry.get("latent_dim"), f"{what}.latent_dim", 1, MAX_DIM)
    num_latents = need_int(entry.get("num_latents"), f"{what}.num_latents", 0, 2**62)
    if num_latents > MAX_LATENTS:
        raise ContainerError(f"header {what} claims {num_latents:,} latents, more than the {MAX_LATENTS:,} allowed")
    streams = entry.get("latent_streams", "per_level")
    if streams not in LATENT_STREAMS:
        raise ContainerError(f"header {what} has an unknown latent stream layout {shown(streams)} (known: "
                             f"{', '.join(LATENT_STREAMS)}; written by a newer shacira-nerf?)")  # fmt: skip
    model = entry.get("entropy_model", "factorized")
    if model not in ENTROPY_MODELS:
        raise ContainerError(f"header {what} names an unknown entropy model {shown(model)} (known: "
                             f"{', '.join(ENTROPY_MODELS)}; written by a newer shacira-nerf?)")  # fmt: skip
    tables = entropy_tables(model, checked["num_levels"], latent_dim)
    claimed = need_int(entry.get("num_tables", tables), f"{what}.num_tables", 1, MAX_LEVELS * MAX_DIM)
    if claimed != tables:
        raise ContainerError(f"header {what} claims {claimed} coding tables; a {model} grid of "
                             f"{checked['num_levels']} levels x {latent_dim} dimensions has {tables}")  # fmt: skip
    return GridEntry(
        geometry=checked,
        latent_dim=latent_dim,
        feature_dim=need_int(entry.get("feature_dim"), f"{what}.feature_dim", 1, MAX_DIM),
        num_latents=num_latents,
        shannon_bits=need_number(entry.get("shannon_bits"), f"{what}.shannon_bits", 0.0),
        latent_streams=streams,
        entropy_model=model,
        num_tables=tables,
    )


@dataclass
class Envelope:
    """The checked envelope of a file, its raw header (for the application's own fields) and its sections."""

    kind: str
    producer: str
    coder: str
    grids: Dict[str, GridEntry]
    networks: Dict[str, Tuple[int, ...]]
    estimate: Dict[str, float]
    header: Dict[str, Any]
    sections: Dict[str, bytes]

    @property
    def num_latents(self) -> int:
        return sum(g.num_latents for g in self.grids.values())


def _read_shape(name: str, value: Any) -> Tuple[int, ...]:
    what = f"networks.{name}"
    dims = need_list(value, what, MAX_TENSOR_DIMS)
    shape = tuple(need_int(n, f"{what}[{i}]", 0, 2**31 - 1) for i, n in enumerate(dims))
    if math.prod(shape) > MAX_LATENTS:
        raise ContainerError(
            f"header {what} claims {math.prod(shape):,} numbers, more than the {MAX_LATENTS:,} allowed"
        )
    return shape


def require_kind(kind: str, expected: str) -> None:
    """A one-line error unless a file of ``kind`` is what the command reads (scene vs image files)."""
    if kind != expected:
        hint = f" ({KINDS[kind][1]})" if kind in KINDS else ""
        name = KINDS[expected][0] if expected in KINDS else repr(expected)
        raise ContainerError(f"not {name}: it holds {shown(kind)}{hint}")


def parse_envelope(header: Dict[str, Any], sections: Dict[str, bytes], kind: Optional[str] = None) -> Envelope:
    """Check the envelope of a decoded container (and its ``kind``, when given)."""
    file_kind = need_str(header.get("kind"), "kind")
    if kind is not None:
        require_kind(file_kind, kind)
    coder = need_str(header.get("coder"), "coder")
    if coder != CODER_NAME:
        raise ContainerError(f"latents are coded with {shown(coder)}; this build decodes {CODER_NAME!r}")
    grids = need_dict(header.get("grids"), "grids")
    if len(grids) > MAX_GRIDS:
        raise ContainerError(f"header grids has {len(grids)} entries, more than the {MAX_GRIDS} allowed")
    entries = {need_str(name, "grid name"): read_grid_entry(escape(name), g) for name, g in grids.items()}
    total = sum(g.num_latents for g in entries.values())
    if total > MAX_LATENTS:
        raise ContainerError(f"header grids claim {total:,} latents, more than the {MAX_LATENTS:,} allowed")
    networks = need_dict(header.get("networks"), "networks")
    if len(networks) > MAX_NETWORK_TENSORS:
        raise ContainerError(f"header networks lists {len(networks)} tensors, more than {MAX_NETWORK_TENSORS}")
    shapes = {need_str(name, "network name"): _read_shape(escape(name), s) for name, s in networks.items()}
    estimate = need_dict(header.get("estimate", {}), "estimate")
    if len(estimate) > 64:
        raise ContainerError(f"header estimate has {len(estimate)} entries, more than the 64 allowed")
    return Envelope(
        kind=file_kind,
        producer=need_str(header.get("producer"), "producer"),
        coder=coder,
        grids=entries,
        networks=shapes,
        estimate={need_str(k, "estimate key"): need_number(v, f"estimate.{escape(k)}") for k, v in estimate.items()},
        header=header,
        sections=sections,
    )


@contextlib.contextmanager
def export_hint() -> Iterator[None]:
    """Tell the user who passed a training checkpoint how to make a .shac file from it."""
    try:
        yield
    except ForeignFileError as exc:
        if exc.checkpoint:
            raise ContainerError(f"{exc}; run `shacira export` to make a .shac file") from None
        raise


def read_envelope(data: bytes, kind: Optional[str] = None) -> Envelope:
    """Verify a file's bytes (every checksum) and check its envelope."""
    with export_hint():
        header, sections = decode_container(data)
    return parse_envelope(header, sections, kind)


def read_file(path: Union[str, Path], kind: Optional[str] = None) -> Tuple[Envelope, bytes]:
    """Read a file and check its envelope; every error is one line that names the file: ``<path>: <why>``."""
    with naming(path):
        data = read_file_bytes(path)
        return read_envelope(data, kind), data


def image_size(header: Mapping[str, Any]) -> Tuple[int, int]:
    """(height, width) of an image file's header, checked: whole sides in [1, ``MAX_SIDE``], at most
    ``MAX_IMAGE_PIXELS``."""
    image = need_dict(header.get("image"), "image")
    need_keys(image, "image", ("height", "width", "channels"))
    height = need_int(image.get("height"), "image.height", 1, MAX_SIDE)
    width = need_int(image.get("width"), "image.width", 1, MAX_SIDE)
    need_int(image.get("channels", 3), "image.channels", 3, 3)
    if height * width > MAX_IMAGE_PIXELS:
        raise ContainerError(f"header image is {width}x{height} = {height * width:,} pixels, more than the "
                             f"{MAX_IMAGE_PIXELS:,} allowed")  # fmt: skip
    return height, width


# ------------------------------------------------------------------------------------------- budget
def check_rebuilt_model(
    env: Envelope,
    grids: Mapping[str, Tuple[Dict[str, int], int]],
    network_shapes: Mapping[str, Tuple[int, ...]],
    total_parameters: int,
) -> None:
    """Hold a model rebuilt from the header without memory (on torch's meta device) against the file: the same grids
    (name -> geometry, latent dimension), the same network tensors, and no more parameters than the file stores
    plus ``MAX_UNSTORED_PARAMETERS``. Run before the model is built for real."""
    if set(grids) != set(env.grids):
        raise ContainerError(f"header lists grids {shown(sorted(env.grids))}, the settings make {shown(sorted(grids))}")
    for name, (geometry, latent_dim) in grids.items():
        entry = env.grids[name]
        if entry.geometry != geometry or entry.latent_dim != latent_dim:
            raise ContainerError(f"grid {name!r} geometry in the header does not match its settings")
    for name, shape in network_shapes.items():
        if env.networks.get(name) != tuple(shape):
            raise ContainerError(f"network tensor {name!r} is listed as {shown(env.networks.get(name))}, the settings "
                                 f"make {list(shape)}")  # fmt: skip
    stored = sum(math.prod(s) for s in network_shapes.values()) + env.num_latents
    if total_parameters - stored > MAX_UNSTORED_PARAMETERS:
        raise ContainerError(f"settings make {total_parameters:,} parameters, {total_parameters - stored:,} more than "
                             f"the file stores (at most {MAX_UNSTORED_PARAMETERS:,} may be unstored)")  # fmt: skip


# ------------------------------------------------------------------------------------------- networks
NetworkArray = Union[np.ndarray, Tuple[np.ndarray, float]]
"""A network tensor as stored: a float16 or float32 array, or int8 values with their float32 scale (``int8``)."""


def network_sections(arrays: Mapping[str, NetworkArray]) -> Tuple[Dict[str, List[int]], List[Tuple[str, bytes]]]:
    """The header's ``networks`` entry and the ``network/<name>`` sections: float arrays as ``pack_array`` writes
    them, int8 ones with their scale as ``pack_scaled_int8`` does."""
    shapes: Dict[str, List[int]] = {}
    sections: List[Tuple[str, bytes]] = []
    for name, arr in arrays.items():
        if isinstance(arr, tuple):
            values, scale = arr
            shapes[name], payload = list(values.shape), pack_scaled_int8(values, scale)
        else:
            shapes[name], payload = list(arr.shape), pack_array(arr)
        sections.append((f"network/{name}", payload))
    return shapes, sections


def require_section(sections: Mapping[str, bytes], name: str) -> bytes:
    if name not in sections:
        raise ContainerError(f"file is missing section {name!r}")
    return sections[name]


def _read_int8(name: str, payload: bytes, shape: Tuple[int, ...]) -> np.ndarray:
    """An int8 network tensor, decoded (``dequantize_int8``): its length and array head checked against ``shape``
    before anything is allocated, its scale a finite float32 in [``MIN_INT8_SCALE``, ``MAX_INT8_SCALE``]."""
    try:
        values, scale = unpack_scaled_int8(payload, shape)
    except ContainerError as exc:
        raise ContainerError(f"network tensor {name!r} {exc}") from None
    if not (math.isfinite(scale) and MIN_INT8_SCALE <= scale <= MAX_INT8_SCALE):
        raise ContainerError(f"network tensor {name!r} has int8 scale {scale!r}; a scale must be a finite number in "
                             f"[{MIN_INT8_SCALE:g}, {MAX_INT8_SCALE:g}]")  # fmt: skip
    if values.min(initial=0) < -INT8_LEVELS:
        raise ContainerError(f"network tensor {name!r} holds int8 value -128; stored values lie in "
                             f"[-{INT8_LEVELS}, {INT8_LEVELS}]")  # fmt: skip
    return dequantize_int8(values, scale)


def read_networks(env: Envelope, expected: Mapping[str, Tuple[int, ...]]) -> Dict[str, np.ndarray]:
    """The network tensors as float32 arrays: exactly the ``expected`` names and shapes, stored as float16, float32
    or int8 with a scale, every value finite."""
    if set(env.networks) != set(expected):
        missing, extra = sorted(set(expected) - set(env.networks)), sorted(set(env.networks) - set(expected))
        raise ContainerError(f"network tensors in the header do not match the settings (missing {shown(missing)}, "
                             f"unexpected {shown(extra)})")  # fmt: skip
    out = {}
    for name, shape in expected.items():
        shape = tuple(shape)
        if env.networks[name] != shape:
            raise ContainerError(f"header lists network tensor {name!r} as {env.networks[name]}, expected {shape}")
        payload = require_section(env.sections, f"network/{name}")
        if is_scaled_int8(payload):
            out[name] = _read_int8(name, payload, shape)
            continue
        arr = unpack_array(payload)
        if arr.dtype not in (np.float16, np.float32) or arr.shape != shape:
            raise ContainerError(f"network tensor {name!r} is {arr.dtype} {arr.shape}, expected float16 or float32 "
                                 f"{shape} (or int8 with a scale)")  # fmt: skip
        if not np.isfinite(arr).all():
            raise ContainerError(f"network tensor {name!r} holds non-finite values (NaN or infinity)")
        out[name] = arr.astype(np.float32, copy=False)
    return out


# --------------------------------------------------------------------------------------------- writing
def encode_file(
    kind: str,
    grids: Sequence[Tuple[str, Dict[str, Any], List[Tuple[str, bytes]]]],
    networks: Mapping[str, NetworkArray],
    estimate: Mapping[str, float],
    fields: Mapping[str, Any],
    extra_sections: Sequence[Tuple[str, bytes]] = (),
) -> bytes:
    """A file's bytes: the envelope (kind, producer, coder, grids, networks, estimate), the application's header
    ``fields``, and its sections: each grid's (``bitstream.encode_grid``), the networks', then ``extra_sections``.

    ``grids``: ``(name, header entry, sections)`` per grid. Deterministic: the same inputs give the same bytes.
    """
    sections: List[Tuple[str, bytes]] = []
    for _, _, grid_sections in grids:
        sections.extend(grid_sections)
    shapes, net_sections = network_sections(networks)
    sections.extend(net_sections)
    sections.extend(extra_sections)
    header = {"kind": kind, "producer": PRODUCER, **fields, "coder": CODER_NAME,
              "grids": {name: entry for name, entry, _ in grids}, "networks": shapes, "estimate": dict(estimate)}  # fmt: skip
    return encode_container(header, sections)
