"""Reading the image a user asks to compress: any file Pillow reads, as uint8 HxWx3, or a one-line error.

Why its own module: every way an input can be unusable (missing, a folder, empty, already a .shac file, 0 pixels,
truncated, an unsupported pixel mode) ends as one ``UserError`` line naming the file, and every well-defined
conversion (palette, grayscale, alpha, 16-bit, CMYK, several frames) happens with a note the command prints.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from shacira_nerf.codec import MAGIC, escape
from shacira_nerf.errors import UserError


def _one_line(text: object) -> str:
    return escape(text)


def _zero_size_png(head: bytes) -> bool:
    """A PNG whose header says 0 pixels wide or high (Pillow refuses to identify those)."""
    if not head.startswith(b"\x89PNG\r\n\x1a\n") or len(head) < 24 or head[12:16] != b"IHDR":
        return False
    return int.from_bytes(head[16:20], "big") == 0 or int.from_bytes(head[20:24], "big") == 0


def _rawmode(im: Image.Image) -> str:
    """The decoder's raw mode (e.g. "RGB;16B" for a 16-bit PNG that Pillow reduces to 8 bits); read before load()."""
    tile = getattr(im, "tile", None)
    if not tile:
        return ""
    args = tile[0][3]
    if isinstance(args, tuple):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def _to_rgb(im: Image.Image, rawmode: str, shown: str, notes: List[str]) -> np.ndarray:
    """Pixels of a loaded image as uint8 HxWx3, converting where the conversion is well-defined (with a note)."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im)
        if mode == "I" and (arr.min() < 0 or arr.max() > 65535):
            raise UserError(f"cannot compress {shown}: 32-bit integer pixels are not supported (save it as 8-bit RGB)")
        gray = np.floor(arr.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
        notes.append("16-bit grayscale image: scaled to 8 bits and copied to the R, G and B channels")
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        raise UserError(f"cannot compress {shown}: floating-point pixels are not supported (save it as 8-bit RGB)")
    if ";16" in rawmode:
        notes.append("16-bit image: reduced to 8 bits per channel (Pillow keeps the high byte)")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        notes.append("palette image: converted to RGB")
        mode = im.mode
    if mode in ("1", "L"):
        notes.append("grayscale image: copied to the R, G and B channels")
        return np.asarray(im.convert("RGB"))
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        rgba = im.convert("RGBA")
        if np.asarray(rgba)[..., 3].min() == 255:
            notes.append("alpha channel dropped (the image is fully opaque)")
        else:
            notes.append("image has transparency: composited on a white background")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode == "RGB":
        return np.asarray(im)
    if mode in ("CMYK", "YCbCr", "RGBX"):
        notes.append(f"{mode} image: converted to RGB")
        return np.asarray(im.convert("RGB"))
    raise UserError(f"cannot compress {shown}: pixel mode {mode!r} is not supported (save it as 8-bit RGB)")


def load_rgb_image(path: Path) -> Tuple[np.ndarray, List[str]]:
    """An image file as uint8 HxWx3 plus notes about any conversion; one-line UserErrors for anything unusable."""
    shown = _one_line(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{shown}: no such file") from None
    except OSError as exc:
        raise UserError(f"cannot read {shown}: {_one_line(exc.strerror or exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{shown}: is a folder, not an image")
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
    except OSError as exc:
        raise UserError(f"cannot read {shown}: {_one_line(exc.strerror or exc)}") from None
    if not head:
        raise UserError(f"cannot compress {shown}: the file is empty")
    if head.startswith(MAGIC):
        raise UserError(f"{shown}: already a shacira file, not an image (use `shacira image decompress`)")
    if _zero_size_png(head):
        raise UserError(f"cannot compress {shown}: the image has no pixels (0 wide or 0 high)")
    notes: List[str] = []
    try:
        with Image.open(path) as im:
            if im.width < 1 or im.height < 1:
                raise UserError(f"cannot compress {shown}: the image has no pixels ({im.width}x{im.height})")
            if getattr(im, "n_frames", 1) > 1:
                notes.append(f"{im.n_frames} frames: using the first")
                im = next(iter(ImageSequence.Iterator(im)))
            rawmode = _rawmode(im)
            im.load()
            arr = _to_rgb(im, rawmode, shown, notes)
    except UserError:
        raise
    except UnidentifiedImageError:
        raise UserError(f"cannot compress {shown}: not an image file Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise UserError(f"cannot compress {shown}: {_one_line(exc)}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UserError(f"cannot compress {shown}: damaged or truncated image ({_one_line(exc)})") from None
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise UserError(f"cannot compress {shown}: unexpected pixel array of shape {arr.shape}")
    return arr, notes
