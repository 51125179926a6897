"""The grid lookup seam: "interpolate this table at these points for this geometry", with named backends.

One operation, several implementations, chosen once when a grid is built (as nerfstudio's encodings choose theirs):

| name | where | what |
| --- | --- | --- |
| ``torch`` | any device | ``hash_grid.hash_grid_interpolate``: the reference every other backend is tested against |
| ``triton`` | CUDA (or a CPU under ``TRITON_INTERPRET=1``) | ``triton_lookup``: one kernel forward, one atomic scatter backward; the rate term also runs as one Triton kernel (``triton_rate``) |
| ``tcnn`` | CUDA with tiny-cuda-nn installed | tiny-cuda-nn's HashGrid with our table as its parameters; only when asked for by name |
| ``matrix`` | any device, fixed points | ``interpolation_matrix``: the lookup of points that never move (an image's pixels) as a sparse matrix |
| ``corners`` | any device, fixed points | the corner rows and weights of points that never move, computed once; serves any subset of them per call |

``auto`` (the default everywhere) is the fastest *tested* backend for the device: ``triton`` on CUDA, ``torch``
elsewhere. tiny-cuda-nn is never chosen automatically: built from source on the H200 (``benchmarks/gpu/
build_tcnn.sh``), its forward pass segfaulted there, so its path has not passed the reference test, and an untested
path is never a default.

The fixed-point backends (``MatrixLookup``, ``CornerCacheLookup``) are built for their points and called as
``lookup(table, index=...)`` (``index``: which of the points, None for all). Every backend returns
``[n, levels, channels]`` float32 interpolated table values, for any number of table columns (a batched fit stacks
its members' tables as columns); the per-level decoder is applied after it (it is affine, so decoding after
interpolation equals interpolating the decoded table).
"""

from __future__ import annotations

import os
import warnings
from typing import Callable, Dict, Optional, Tuple, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from shacira_nerf.core.hash_grid import GridGeometry, corner_indices_and_weights, hash_grid_interpolate
from shacira_nerf.errors import UserError

LOOKUP_BACKENDS = ("torch", "triton", "tcnn")
"""Backends for points that change every call (rays' samples), by name; ``auto`` picks one of them."""

LOOKUP_CHOICES = ("auto", *LOOKUP_BACKENDS)
"""What a user may ask for (``--pipeline.model.implementation``); ``matrix`` and ``corners`` are built for fixed
points instead (``MatrixLookup``, ``CornerCacheLookup``), never by name."""


PER_CHANNEL_GATHER_MAX = 4
"""Up to this many table columns the corner cache gathers one column at a time (on a CPU ~1.5x faster than whole
rows, see ``hash_grid_interpolate``); a wide stacked table (many members) gathers whole rows."""


class LookupBackendError(UserError, ValueError):
    """An unknown backend name, or a backend this machine cannot run; the message lists the ones it can."""


def _triton_unavailable(device: torch.device) -> Optional[str]:
    try:
        import triton  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"Triton cannot be imported ({type(exc).__name__})"
    if device.type == "cuda":
        return None if torch.cuda.is_available() else "no CUDA device"
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None  # Triton's interpreter: how the kernels are tested on CPUs
    return f"Triton kernels need a CUDA device, not {device.type}"


def _tcnn_unavailable(device: torch.device) -> Optional[str]:
    if device.type != "cuda":
        return f"tiny-cuda-nn needs a CUDA device, not {device.type}"
    try:
        import tinycudann  # noqa: F401
    except Exception as exc:
        return f"tiny-cuda-nn is not installed ({type(exc).__name__})"
    return None


_UNAVAILABLE: Dict[str, Callable[[torch.device], Optional[str]]] = {
    "torch": lambda device: None,
    "triton": _triton_unavailable,
    "tcnn": _tcnn_unavailable,
}


def available_backends(device: Union[str, torch.device]) -> Tuple[str, ...]:
    """The lookup backends that can run on ``device`` here."""
    device = torch.device(device)
    return tuple(name for name in LOOKUP_BACKENDS if _UNAVAILABLE[name](device) is None)


_TCNN_NOTICE_SHOWN = False


def resolve_backend_name(name: str, device: Union[str, torch.device]) -> str:
    """The backend ``name`` means on ``device`` (``auto`` -> the fastest tested one), or a one-line error."""
    device = torch.device(device)
    if name not in LOOKUP_CHOICES:
        raise LookupBackendError(
            f"unknown lookup backend {name!r}; choose one of {', '.join(LOOKUP_CHOICES)} "
            f"(this machine has {', '.join(available_backends(device))})"
        )
    if name == "auto":
        global _TCNN_NOTICE_SHOWN
        if device.type == "cuda" and _tcnn_unavailable(device) is None and not _TCNN_NOTICE_SHOWN:
            _TCNN_NOTICE_SHOWN = True
            warnings.warn(
                "tiny-cuda-nn is installed but not used: shacira's default is its Triton lookup, which is tested "
                "against the reference; pass implementation 'tcnn' to use tiny-cuda-nn",
                stacklevel=2,
            )
        # Triton's CPU interpreter is for tests only: "auto" picks Triton on CUDA alone.
        return "triton" if device.type == "cuda" and _triton_unavailable(device) is None else "torch"
    reason = _UNAVAILABLE[name](device)
    if reason is not None:
        raise LookupBackendError(
            f"lookup backend {name!r} cannot run here: {reason} (this machine has {', '.join(available_backends(device))})"
        )
    return name


class GridLookup:
    """A lookup backend bound to one geometry: ``lookup(table, x)`` -> interpolated values per level."""

    name = "abstract"
    fused_rate = False
    """Whether grids on this backend also compute their rate with the fused Triton kernel."""
    sga_kernel = False
    """Whether grids on this backend may quantize with the SGA Triton kernel (``triton_sga``; opt-in per grid)."""

    def __init__(self, geometry: GridGeometry) -> None:
        self.geometry = geometry

    def __call__(
        self, table: Float[Tensor, "rows channels"], x: Float[Tensor, "n dim"]
    ) -> Float[Tensor, "n levels channels"]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class TorchLookup(GridLookup):
    """The pure-torch reference (``hash_grid_interpolate``)."""

    name = "torch"

    def __call__(self, table: Tensor, x: Tensor) -> Tensor:
        return hash_grid_interpolate(table, x, self.geometry)


class TritonLookup(GridLookup):
    """The Triton kernels of ``triton_lookup`` (and the fused rate of ``triton_rate``)."""

    name = "triton"
    fused_rate = True
    sga_kernel = True

    def __init__(self, geometry: GridGeometry) -> None:
        super().__init__(geometry)
        from shacira_nerf.core.triton_lookup import TritonInterpolator

        self._interpolate = TritonInterpolator(geometry)

    @torch.compiler.disable
    def __call__(self, table: Tensor, x: Tensor) -> Tensor:
        # Opaque to torch.compile: the kernels are launched by hand inside an autograd.Function.
        reason = _triton_unavailable(x.device)
        if reason is not None:
            raise LookupBackendError(f"lookup backend 'triton' cannot run on these points: {reason}")
        return self._interpolate(table, x)


class TcnnLookup(GridLookup):
    """tiny-cuda-nn's HashGrid kernel with our (quantized latent) table passed in as its parameter tensor.

    tiny-cuda-nn's torch binding takes the parameters as an input of its autograd function, so gradients flow back
    into the table. Its level layout matches ``GridGeometry`` (same scales, resolutions, per-level sizes, hash). Its
    table has ``n_features_per_level`` in {1, 2, 4, 8} columns.
    """

    name = "tcnn"

    def __init__(self, geometry: GridGeometry) -> None:
        super().__init__(geometry)
        self._encodings: Dict[Tuple[torch.device, int], object] = {}

    def _encoding(self, device: torch.device, channels: int):  # noqa: ANN202 - a tinycudann.Encoding
        key = (device, channels)
        if key not in self._encodings:
            import tinycudann as tcnn

            g = self.geometry
            enc = tcnn.Encoding(
                n_input_dims=g.dim,
                encoding_config={
                    "otype": "HashGrid",
                    "n_levels": g.num_levels,
                    "n_features_per_level": channels,
                    "log2_hashmap_size": g.log2_hashmap_size,
                    "base_resolution": g.min_res,
                    "per_level_scale": g.growth,
                    "interpolation": "Linear",
                },
                dtype=torch.float32,  # tiny-cuda-nn's default is half: compared with the reference in float32
            ).to(device)
            if enc.params.numel() != g.offsets[-1] * channels:
                raise RuntimeError(
                    f"tiny-cuda-nn grid has {enc.params.numel()} parameters, ours {g.offsets[-1] * channels}"
                )
            self._encodings[key] = enc
        return self._encodings[key]

    def __call__(self, table: Tensor, x: Tensor) -> Tensor:
        import tinycudann as tcnn

        enc = self._encoding(x.device, table.shape[1])
        params = table.reshape(-1).to(enc.params.dtype)
        n = x.shape[0]
        pad = -n % TCNN_BATCH_GRANULARITY  # tiny-cuda-nn takes batches of a multiple of 256 points only
        points = torch.cat([x, x.new_zeros(pad, x.shape[1])]) if pad else x.contiguous()
        out = tcnn.modules._module_function.apply(enc.native_tcnn_module, points, params, enc.loss_scale)
        return out[:n].float().view(n, self.geometry.num_levels, table.shape[1])


TCNN_BATCH_GRANULARITY = 256
"""tiny-cuda-nn's ``BATCH_SIZE_GRANULARITY``: its kernels take a multiple of this many points (padded here)."""

_BACKEND_CLASSES = {"torch": TorchLookup, "triton": TritonLookup, "tcnn": TcnnLookup}


def resolve_lookup(name: str, geometry: GridGeometry, device: Union[str, torch.device] = "cpu") -> GridLookup:
    """The lookup backend ``name`` (or ``auto``) for grids of ``geometry`` that will run on ``device``."""
    return _BACKEND_CLASSES[resolve_backend_name(name, device)](geometry)


class MatrixLookup(GridLookup):
    """The lookup of fixed points as a sparse matrix (``InterpolationMatrix``): for points that never move, such as
    an image's pixel centres, all of them at every call; any number of table columns (the batched image fitter
    stacks its members' tables)."""

    name = "matrix"

    def __init__(self, geometry: GridGeometry, points: Float[Tensor, "n dim"]) -> None:
        super().__init__(geometry)
        from shacira_nerf.core.interpolation_matrix import InterpolationMatrix

        self.points = points
        self.matrix = InterpolationMatrix(points, geometry)

    def __call__(self, table: Tensor, x: Optional[Tensor] = None, index: Optional[Tensor] = None) -> Tensor:
        if x is not None and x is not self.points and tuple(x.shape) != tuple(self.points.shape):
            raise ValueError(f"the matrix lookup was built for {self.points.shape[0]} fixed points, got {x.shape[0]}")
        if index is not None:
            raise ValueError("the matrix lookup serves all of its fixed points at once (index must be None)")
        return self.matrix.apply(table)


class CornerCacheLookup(GridLookup):
    """The lookup of fixed points with every point's corner rows and d-linear weights computed once: each call
    serves any subset of the points (``index``), e.g. an image fit's random pixels of one step.

    The same gather and weighted sum as ``hash_grid_interpolate`` (equal values), without recomputing the hash
    and the weights at every step: on a CPU most of the reference's time.
    """

    name = "corners"

    def __init__(self, geometry: GridGeometry, points: Float[Tensor, "n dim"]) -> None:
        super().__init__(geometry)
        rows, weights = corner_indices_and_weights(points, geometry)
        self.rows: Int[Tensor, "n levels corners"] = rows
        self.weights: Float[Tensor, "n levels corners"] = weights

    @staticmethod
    def cache_bytes(num_points: int, geometry: GridGeometry) -> int:
        """Memory of the cache: int64 rows and float32 weights per point, level and corner."""
        return num_points * geometry.num_levels * 2**geometry.dim * (8 + 4)

    def __call__(self, table: Tensor, x: Optional[Tensor] = None, index: Optional[Tensor] = None) -> Tensor:
        if x is not None:
            raise ValueError("the corner-cache lookup serves its fixed points (pass index, not points)")
        rows = self.rows if index is None else self.rows[index]
        weights = self.weights if index is None else self.weights[index]
        flat = rows.reshape(-1)
        if table.shape[1] <= PER_CHANNEL_GATHER_MAX:  # as hash_grid_interpolate: one gather per channel
            channels = [(torch.index_select(table[:, k], 0, flat).view_as(weights) * weights).sum(-1)
                        for k in range(table.shape[1])]  # fmt: skip
            return torch.stack(channels, dim=-1)
        g = torch.index_select(table, 0, flat).view(*weights.shape, table.shape[1])
        return (g * weights.unsqueeze(-1)).sum(2)
