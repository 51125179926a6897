"""The rate: bits of the quantized latents under the entropy model (appendix eq. 3), and size estimates from it.

The bits are an *estimate* of the coded size: the file stores integer-quantized versions of the same probabilities
and a range coder adds a few bytes per stream, so the exported file is the truth and this is what training optimises.
"""

from __future__ import annotations

import torch
from torch import Tensor

from shacira_nerf.units import BYTES_PER_MB


def bits_from_likelihoods(likelihoods: Tensor) -> Tensor:
    """Total self-information -sum log2 P in float32 (outside autocast: fp16 would underflow small likelihoods)."""
    with torch.autocast(device_type=likelihoods.device.type, enabled=False):
        return -torch.log2(likelihoods.float()).sum()


def bits_per_latent(bits: float, num_latents: int) -> float:
    """Average bits per scalar latent."""
    return float(bits) / max(int(num_latents), 1)


def estimated_megabytes(latent_bits: float, float_parameters: int, bytes_per_float: int = 4) -> float:
    """Estimated file size in MB: coded latents plus networks stored as floats (headers not counted)."""
    return (float(latent_bits) / 8.0 + float_parameters * bytes_per_float) / BYTES_PER_MB
