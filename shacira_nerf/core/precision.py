"""Network precision: how a file stores the float networks (latent decoders, MLPs), shared by scenes and images.

Training rounds the networks to their storage precision once it ends (``round_to_precision_``), so the weights that
were evaluated are exactly the weights the file holds; a tensor that precision does not hold exactly (not rounded,
or beyond float16's range) is stored as float32 instead (``storage_array``), so a file always decodes bit-exactly to
the model that wrote it.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import Tensor

NETWORK_DTYPES = {"float16": torch.float16, "float32": torch.float32}
"""Storage precisions of network weights, by the name configs use."""


@torch.no_grad()
def round_to_precision_(tensors: Iterable[Tensor], precision: str) -> None:
    """Round every tensor to ``precision`` in place (values float16 cannot hold finitely are left as they are)."""
    dtype = NETWORK_DTYPES[precision]
    for tensor in tensors:
        rounded = tensor.to(dtype).to(tensor.dtype)
        tensor.copy_(torch.where(torch.isfinite(rounded), rounded, tensor))


def storage_array(tensor: Tensor, precision: str) -> np.ndarray:
    """A network tensor as a file stores it: in ``precision`` if that holds it exactly, else float32."""
    arr = tensor.detach().float().cpu().numpy()
    narrow = arr.astype(np.dtype(precision))
    return narrow if np.array_equal(narrow.astype(np.float32), arr) else arr
