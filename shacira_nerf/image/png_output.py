"""Writing the commands' outputs: an early check that the output can be written, and atomic PNG writes.

Why: a fit takes minutes, so a missing folder or a wrong suffix must fail before it starts; and a PNG is written to
a unique temporary file in the same folder and renamed into place, so nothing is ever half-written.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from shacira_nerf.codec import check_writable, escape, write_bytes_atomic
from shacira_nerf.errors import UserError


def check_output(path: Path, suffix: str = "") -> None:
    """Fail early (before minutes of work) if ``path`` cannot be an output file."""
    check_writable(path)
    if suffix and path.suffix.lower() != suffix:
        raise UserError(f"cannot write {escape(path)}: the output is a {suffix[1:].upper()} file, name it *{suffix}")


def save_png(pixels: np.ndarray, path: Path) -> int:
    """Write uint8 pixels as PNG atomically (a unique temporary file in the same folder, fsync, rename); returns
    bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return write_bytes_atomic(path, buffer.getbuffer())
