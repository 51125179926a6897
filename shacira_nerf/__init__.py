"""shacira-nerf: SHACIRA-compressed hash grids for nerfstudio, and a real compressed file.

Importing the package prints our user-facing errors as one line (see ``errors.py``); importing its nerfstudio glue
(``shacira_nerf.nerf``, which nerfstudio does when it discovers the ``shacira`` methods) also lets nerfstudio 1.1.5
reload its own checkpoints under torch >= 2.6 (see ``checkpoints.py``). Importing it also hides the known
deprecation warnings of torch and nerfstudio, each by category, message and module (see ``warnings_filter.py``). The
package itself imports no torch, so ``shacira info`` starts quickly.
"""

from shacira_nerf.errors import install_excepthook
from shacira_nerf.warnings_filter import install_warning_filters

__version__ = "0.1.0"

install_excepthook()
install_warning_filters()
