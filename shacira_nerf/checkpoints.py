"""Reloading nerfstudio 1.1.5 checkpoints under torch >= 2.6 without turning off safe loading.

torch 2.6 made ``torch.load`` default to ``weights_only=True``; nerfstudio 1.1.5 calls it without the argument, and
its checkpoints hold numpy scalars (the learning-rate schedulers' state), so ``ns-eval``, ``ns-render``,
``ns-viewer`` and resuming fail with "Weights only load failed". Rather than setting
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` (which re-enables arbitrary unpickling for every load in the process), we add
exactly the numpy types those checkpoints contain to torch's allow-list of safe globals.
"""

from __future__ import annotations

import numpy as np
import torch


def _numpy_checkpoint_globals() -> list:
    """The numpy callables/types a nerfstudio checkpoint's pickle references."""
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore
    names = [scalar, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        names += [getattr(dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType") if hasattr(dtypes, n)]
    return names


def allow_nerfstudio_checkpoints() -> None:
    """Register the numpy globals as safe for ``torch.load(weights_only=True)`` (no-op on older torch)."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add(_numpy_checkpoint_globals())
