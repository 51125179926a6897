"""Hide the known deprecation warnings of torch and nerfstudio that every command prints, and nothing else.

Each entry names the warning's category, the start of its message and the module it is attributed to, so the same
message from anywhere else (our code, a new nerfstudio release, a user's script) still shows, and so does every
other warning, ours included. Importing ``shacira_nerf`` installs them (``shacira`` before it imports nerfstudio;
``ns-*`` commands when they discover our methods, which is after nerfstudio's own imports: the three warnings those
imports print come before any plugin code runs, in the main process).

The filters also go into ``sys.warnoptions``: ``multiprocessing`` passes those as ``-W`` options to the processes it
spawns (nerfstudio's ``ParallelDataManager`` spawns its ray generator), where they apply before any import.
"""

from __future__ import annotations

import re
import sys
import warnings
from typing import List, NamedTuple, Type


class KnownWarning(NamedTuple):
    category: Type[Warning]
    message: str
    """The start of the message, literally (as ``-W`` takes it: no colons)."""
    module: str
    """The module the warning is attributed to, exactly."""


KNOWN_WARNINGS: List[KnownWarning] = [
    # torch >= 2.9 deprecates torch.jit; nerfstudio's camera_utils decorates functions with torch.jit.script.
    KnownWarning(FutureWarning, "`torch.jit.script` is deprecated", "torch.jit._script"),
    # nerfstudio's trunc_exp (field_components/activations.py) uses torch.cuda.amp's custom_fwd / custom_bwd.
    KnownWarning(FutureWarning, "`torch.cuda.amp.custom_fwd(args...)` is deprecated", "nerfstudio.field_components.activations"),
    KnownWarning(FutureWarning, "`torch.cuda.amp.custom_bwd(args...)` is deprecated", "nerfstudio.field_components.activations"),
    # nerfstudio's Trainer builds torch.cuda.amp.GradScaler.
    KnownWarning(FutureWarning, "`torch.cuda.amp.GradScaler(args...)` is deprecated", "nerfstudio.engine.trainer"),
    # nerfstudio's Cameras index with lists (torch >= 2.8 deprecates it; four call sites).
    KnownWarning(UserWarning, "Using a non-tuple sequence for multidimensional indexing is deprecated", "nerfstudio.cameras.cameras"),
    # ns-eval: nerfstudio imports torchmetrics.functional names that torchmetrics >= 1.6 moved.
    KnownWarning(FutureWarning, "Importing `spectral_angle_mapper` from `torchmetrics.functional`", "torchmetrics.utilities.prints"),
]  # fmt: skip


def _option(known: KnownWarning) -> str:
    """The ``-W`` spelling of a filter: action:message:category:module (``warnings`` escapes message and module)."""
    return f"ignore:{known.message}:{known.category.__name__}:{known.module}"


def install_warning_filters() -> None:
    """Ignore exactly the known third-party warnings, here and in spawned processes (idempotent)."""
    for known in KNOWN_WARNINGS:
        warnings.filterwarnings(
            "ignore", message=re.escape(known.message), category=known.category, module=re.escape(known.module) + r"\Z"
        )
        option = _option(known)
        if option not in sys.warnoptions:
            sys.warnoptions.append(option)
