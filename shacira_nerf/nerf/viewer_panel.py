"""The compressed-size panel in nerfstudio's web viewer.

nerfstudio installs every ``ViewerElement`` it finds among the public attributes of the pipeline's modules, in a
folder named after the attribute path; this module is the model's ``compression`` submodule, so the panel shows up
as "Custom Elements / model / compression". During training it shows the *estimate* (updated every
``size_update_every`` steps from a training callback, never per render); ``shacira view`` shows the file's real size.
"""

from __future__ import annotations

from typing import Dict, Optional

from nerfstudio.viewer.viewer_elements import ViewerText
from torch import nn

from shacira_nerf.units import BYTES_PER_MB


class SizePanel(nn.Module):
    """Read-only text fields: size, bits per latent, ratio to the plain float32 grid, and lambda."""

    def __init__(self, rate_lambda: float) -> None:
        super().__init__()
        self.size = ViewerText(
            "Size", "not measured yet", disabled=True, hint="Compressed scene size (MB = 10^6 bytes)"
        )
        self.bits_per_latent = ViewerText("Bits per latent", "-", disabled=True)
        self.ratio = ViewerText("Ratio to float32 grid", "-", disabled=True, hint="Same tables stored as float32")
        self.rate_lambda = ViewerText("Lambda (rate weight)", f"{rate_lambda:g}", disabled=True)

    def show_estimate(self, estimate: Dict[str, float], step: Optional[int] = None) -> None:
        """Training-time estimate, labelled as such."""
        at = f" at step {step}" if step is not None else ""
        self.size.value = f"{estimate['size_MB']:.4f} MB (estimate{at})"
        self.bits_per_latent.value = f"{estimate['bits_per_latent']:.3f} (estimate)"
        self.ratio.value = f"{estimate['ratio_to_float32_grid']:.1f}x (estimate, latents only)"

    def show_file(self, file_bytes: int, bits_per_latent: float, ratio_to_float32_grid: float) -> None:
        """The real file's numbers (``shacira view``)."""
        self.size.value = f"{file_bytes / BYTES_PER_MB:.4f} MB (file: {file_bytes:,} bytes)"
        self.bits_per_latent.value = f"{bits_per_latent:.3f} (file)"
        self.ratio.value = f"{ratio_to_float32_grid:.1f}x (file, whole file)"
