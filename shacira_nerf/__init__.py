"""shacira-nerf: SHACIRA-compressed hash grids for nerfstudio, and a real compressed file.

Importing the package (nerfstudio does so when it discovers the ``shacira`` methods) also:
- lets nerfstudio 1.1.5 reload its own checkpoints under torch >= 2.6 (see ``checkpoints.py``);
- prints our user-facing errors as one line (see ``errors.py``).
"""

from shacira_nerf.checkpoints import allow_nerfstudio_checkpoints
from shacira_nerf.errors import install_excepthook

__version__ = "0.1.0"

allow_nerfstudio_checkpoints()
install_excepthook()
