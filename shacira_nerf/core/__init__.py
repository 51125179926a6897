"""The compression model of SHACIRA, independent of nerfstudio: latents, quantizer, decoder, entropy model, rate.

Everything here is plain torch and serves 2D (images) and 3D (radiance fields) alike.
"""

from shacira_nerf.core.decoder import LatentDecoder
from shacira_nerf.core.entropy_model import FactorizedEntropyModel
from shacira_nerf.core.grid import ShaciraGrid
from shacira_nerf.core.hash_grid import GridGeometry, hash_grid_lookup
from shacira_nerf.core.latents import Latents
from shacira_nerf.core.per_level_entropy import PerLevelEntropyModel
from shacira_nerf.core.quantizer import AnnealedQuantizer, sga_round, soft_round, ste_round
from shacira_nerf.core.rate import bits_from_likelihoods

__all__ = [
    "AnnealedQuantizer",
    "FactorizedEntropyModel",
    "GridGeometry",
    "LatentDecoder",
    "Latents",
    "PerLevelEntropyModel",
    "ShaciraGrid",
    "bits_from_likelihoods",
    "hash_grid_lookup",
    "sga_round",
    "soft_round",
    "ste_round",
]
