"""``shacira image compress | decompress | grid``: the appendix's image experiments as a command-line tool.

Each command is a tyro dataclass whose docstring is its help text and whose ``main()`` runs it. Every problem a user
can fix (a missing or unreadable input, a file that is not ours, a missing output folder) ends as one line through
``UserError``; outputs are written to a temporary file and renamed into place, so nothing is ever half-written.

Also runnable without the main CLI: ``python -m shacira_nerf.image.cli compress in.png out.shac``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, List, Literal, Optional, Tuple

import numpy as np
import torch
import tyro
from PIL import Image, ImageDraw, ImageFont, ImageSequence, UnidentifiedImageError

from shacira_nerf.codec import MAGIC, check_writable, escape, write_bytes_atomic
from shacira_nerf.core.quantizer import QuantizerMode
from shacira_nerf.errors import UserError
from shacira_nerf.file_layer import MAX_IMAGE_PIXELS
from shacira_nerf.image.field import KODAK_PRESET, ImageField, ImageFieldConfig
from shacira_nerf.image.image_file import read_image_file, write_image_file
from shacira_nerf.image.train import fit_image, psnr, resolve_device, to_uint8

MAX_OUTPUT_PIXELS = MAX_IMAGE_PIXELS
"""Largest picture decompress/grid will render (8192 x 8192; as large as a file may claim): a typo in --scale should
not eat all memory."""


def _one_line(text: object) -> str:
    return escape(text)


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------ image input


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


# ----------------------------------------------------------------------------------------------------- output


def check_output(path: Path, suffix: str = "") -> None:
    """Fail early (before minutes of work) if ``path`` cannot be an output file."""
    check_writable(path)
    if suffix and path.suffix.lower() != suffix:
        raise UserError(f"cannot write {_one_line(path)}: the output is a {suffix[1:].upper()} file, name it *{suffix}")


def save_png(pixels: np.ndarray, path: Path) -> int:
    """Write uint8 pixels as PNG atomically (a unique temporary file in the same folder, fsync, rename); returns
    bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return write_bytes_atomic(path, buffer.getbuffer())


def _device(name: str) -> torch.device:
    try:
        device = resolve_device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {name!r} (use auto, cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available (use --device cpu)")
    return device


def _read_image_field(path: Path, device: torch.device) -> ImageField:
    return read_image_file(path, device)


# --------------------------------------------------------------------------------------------------- commands


@dataclass
class CompressResult:
    """What ``compress`` measured (all from the written file)."""

    psnr: float
    """PSNR in dB of the decoded file's 8-bit rendering against the input."""
    bpp: float
    """Bits per pixel: 8 x file bytes / (height x width)."""
    file_bytes: int
    """Length of the written file."""
    height: int
    width: int


@dataclass
class Compress:
    """Compress an image into a .shac file: fit a SHACIRA grid and MLP to it, then entropy-code the integer latents.

    Prints PSNR (of the decoded file against the input), bits per pixel (from the file's real length) and the file
    size. Larger --lambda or smaller --log2-entries give smaller files at lower PSNR.
    """

    input: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="INPUT")]
    """Image to compress (PNG, JPEG, ...; converted to 8-bit RGB with a note where needed)."""
    output: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUTPUT")]
    """The .shac file to write."""
    rate_lambda: Annotated[float, tyro.conf.arg(name="lambda")] = ImageFieldConfig.rate_lambda
    """Rate weight: loss = MSE + lambda x estimated bits per latent (appendix: 1e-4). It acts once the entropy
    model fits the latents: with the appendix's --lr-entropy that takes tens of thousands of steps."""
    preset: Literal["appendix", "kodak"] = "appendix"
    """Settings: appendix (the appendix's image text: 16 levels of 2^15 rows, two hidden layers of 16, 65536 random
    pixels a step) or kodak (what benchmarks/image_kodak.py measures on Kodak: the authors' public Kodak config, 24
    levels of 2^11 rows, one hidden layer, whole-image steps: its Kodak numbers are in benchmarks/README.md; slow on
    a CPU, use --steps 5000 or more on a GPU). The flags below override either."""
    log2_entries: Optional[int] = None
    """log2 of the hash-table rows per level (default: the preset's, 15 or 11; the appendix sweeps 13..17; allowed
    8..24)."""
    steps: int = 2000
    """Training steps."""
    lr_latents: Optional[float] = None
    """Learning rate of the latents (default: the preset's; appendix: 0.01 for Kodak-sized images, over far more
    steps than a CPU run; raising it lets the integer latents reach finer precision in short runs: higher PSNR, more
    bits)."""
    lr_entropy: Optional[float] = None
    """Learning rate of the entropy model (default: the preset's; appendix: 1e-4); 1e-2 lets --lambda take effect in
    short runs."""
    quantizer: QuantizerMode = ImageFieldConfig.quantizer
    """Rounding stand-in while training: sga (stochastic Gumbel annealing, the authors' Kodak setting) or soft_round
    (deterministic Agustsson & Theis soft rounding; worse against JPEG in our kodim23 runs)."""
    seed: int = 0
    """Random seed (the result is deterministic for a seed on CPU)."""
    device: str = "auto"
    """Where to train: auto (CUDA if available), cpu, cuda, cuda:1, ..."""
    progress: bool = True
    """Show a progress bar."""

    def config(self) -> ImageFieldConfig:
        """The field settings these flags select."""
        base = ImageFieldConfig(**KODAK_PRESET) if self.preset == "kodak" else ImageFieldConfig()
        log2_entries = base.log2_hashmap_size if self.log2_entries is None else self.log2_entries
        lr_latents = base.lr_latents if self.lr_latents is None else self.lr_latents
        lr_entropy = base.lr_entropy if self.lr_entropy is None else self.lr_entropy
        if not 8 <= log2_entries <= 24:
            raise UserError(f"--log2-entries must be in 8..24 (the appendix uses 13..17), got {log2_entries}")
        if not (math.isfinite(self.rate_lambda) and self.rate_lambda >= 0):
            raise UserError(f"--lambda must be a number >= 0, got {self.rate_lambda}")
        for flag, value in (("--lr-latents", lr_latents), ("--lr-entropy", lr_entropy)):
            if not (math.isfinite(value) and value >= 0):
                raise UserError(f"{flag} must be a number >= 0, got {value}")
        return dataclasses.replace(
            base,
            rate_lambda=self.rate_lambda,
            log2_hashmap_size=log2_entries,
            lr_latents=lr_latents,
            lr_entropy=lr_entropy,
            quantizer=self.quantizer,
        )

    def main(self) -> CompressResult:
        if self.steps < 1:
            raise UserError(f"--steps must be >= 1, got {self.steps}")
        config = self.config()
        device = _device(self.device)
        check_output(self.output)
        with contextlib.suppress(OSError):
            if self.output.exists() and os.path.samefile(self.input, self.output):
                raise UserError(f"output {_one_line(self.output)} is the input image; choose another name")
        image, notes = load_rgb_image(self.input)
        for note in notes:
            _note(note)
        field = fit_image(image, config, self.steps, device, self.seed, progress=self.progress)
        file_bytes = write_image_file(field, self.output)
        decoded = read_image_file(self.output, device)
        h, w = image.shape[:2]
        result = CompressResult(psnr(to_uint8(decoded.render()), image), 8.0 * file_bytes / (h * w), file_bytes, h, w)
        print(
            f"wrote {_one_line(self.output)}: {file_bytes:,} bytes, {result.bpp:.4f} bpp (file bits / {w}x{h} pixels), "
            f"PSNR {result.psnr:.2f} dB (decoded file vs input, 8-bit)"
        )
        return result


@dataclass
class Decompress:
    """Decode a .shac image file to PNG; --scale 2 renders the field at twice the resolution (super-resolution)."""

    input: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="INPUT")]
    """The .shac image file."""
    output: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUTPUT")]
    """The PNG to write."""
    scale: float = 1.0
    """Output size relative to the original: round(scale x height) x round(scale x width)."""
    device: str = "auto"
    """Where to render: auto (CUDA if available), cpu, cuda, ..."""

    def main(self) -> Tuple[int, int]:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise UserError(f"--scale must be a number > 0, got {self.scale}")
        check_output(self.output, ".png")
        field = _read_image_field(self.input, _device(self.device))
        h, w = round(self.scale * field.height), round(self.scale * field.width)
        if h < 1 or w < 1:
            raise UserError(f"--scale {self.scale} gives an empty {w}x{h} picture")
        if h * w > MAX_OUTPUT_PIXELS:
            raise UserError(f"--scale {self.scale} gives {w}x{h} pixels, more than the {MAX_OUTPUT_PIXELS:,} allowed")
        size = save_png(to_uint8(field.render(h, w)), self.output)
        print(f"wrote {_one_line(self.output)}: {w}x{h} pixels, {size:,} bytes")
        return h, w


def level_picture(field: ImageField, max_tile: int = 512) -> np.ndarray:
    """The decoded features of every level as one uint8 picture (appendix Figure 4).

    Each level's features (the decoder applied to the rounded latents, interpolated by the grid) are evaluated at
    the pixel centres of the image (shrunk so that its longer side is at most ``max_tile``), normalised to [0, 1]
    per level, and tiled coarse to fine, left to right then top to bottom. One feature is shown as gray, two as red
    and green, three or more as RGB of the first three.
    """
    scale = min(1.0, max_tile / max(field.height, field.width))
    th, tw = max(1, round(field.height * scale)), max(1, round(field.width * scale))
    features = field.level_features(th, tw).float().cpu().numpy()  # [levels, th, tw, f]
    levels = features.shape[0]
    cols = math.ceil(math.sqrt(levels))
    rows = math.ceil(levels / cols)
    gap = 4
    canvas = np.full((rows * th + (rows + 1) * gap, cols * tw + (cols + 1) * gap, 3), 255, dtype=np.uint8)
    for level in range(levels):
        f = features[level]
        lo, hi = float(f.min()), float(f.max())
        f = (f - lo) / (hi - lo) if hi > lo else np.full_like(f, 0.5)
        if f.shape[2] == 1:
            tile = np.repeat(f, 3, axis=2)
        else:
            tile = np.zeros(f.shape[:2] + (3,), dtype=f.dtype)
            tile[..., : min(3, f.shape[2])] = f[..., :3]
        y, x = gap + (level // cols) * (th + gap), gap + (level % cols) * (tw + gap)
        canvas[y : y + th, x : x + tw] = np.round(tile * 255).astype(np.uint8)
    picture = Image.fromarray(canvas)
    if th >= 24 and tw >= 48:
        draw = ImageDraw.Draw(picture)
        font = ImageFont.load_default()
        resolutions = field.grid.geometry.resolutions
        for level in range(levels):
            y, x = gap + (level // cols) * (th + gap), gap + (level % cols) * (tw + gap)
            label = f"L{level} {resolutions[level]}x{resolutions[level]}"
            box = draw.textbbox((x + 3, y + 2), label, font=font)
            draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
            draw.text((x + 3, y + 2), label, fill=(255, 255, 255), font=font)
    return np.asarray(picture)


@dataclass
class Grid:
    """Draw the learned per-level feature maps of a .shac image file as one PNG (appendix Figure 4).

    Coarse to fine, left to right then top to bottom; each level normalised on its own.
    """

    input: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="INPUT")]
    """The .shac image file."""
    output: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUTPUT")]
    """The PNG to write."""
    max_tile: int = 512
    """Longest side of one level's tile in pixels (tiles are the image's size, shrunk to fit)."""
    device: str = "auto"
    """Where to evaluate: auto (CUDA if available), cpu, cuda, ..."""

    def main(self) -> Tuple[int, int]:
        if self.max_tile < 1:
            raise UserError(f"--max-tile must be >= 1, got {self.max_tile}")
        check_output(self.output, ".png")
        field = _read_image_field(self.input, _device(self.device))
        picture = level_picture(field, self.max_tile)
        size = save_png(picture, self.output)
        print(f"wrote {_one_line(self.output)}: {field.config.num_levels} levels, {size:,} bytes")
        return picture.shape[0], picture.shape[1]


COMMANDS = {"compress": Compress, "decompress": Decompress, "grid": Grid}
"""Subcommands of ``shacira image``."""


def entrypoint() -> None:
    """``python -m shacira_nerf.image.cli <command> ...``: run one command; one-line errors, exit status 1."""
    command = tyro.extras.subcommand_cli_from_dict(COMMANDS, description=__doc__.splitlines()[0])
    try:
        command.main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    entrypoint()
