"""``shacira image compress | decompress | grid``: the appendix's image experiments as a command-line tool.

Each command is a tyro dataclass whose docstring is its help text and whose ``main()`` runs it. Every problem a user
can fix (a missing or unreadable input, a file that is not ours, a missing output folder) ends as one line through
``UserError``; outputs are written to a temporary file and renamed into place, so nothing is ever half-written. The
verbs only: reading input images is ``image_io``, writing PNGs ``png_output``, the per-level picture
``level_picture``, fitting ``train``, the file ``image_file``.

Also runnable without the main CLI: ``python -m shacira_nerf.image.cli compress in.png out.shac``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional, Tuple

import torch
import tyro

from shacira_nerf.codec import escape
from shacira_nerf.core.quantizer import QuantizerMode
from shacira_nerf.errors import UserError
from shacira_nerf.file_layer import MAX_IMAGE_PIXELS
from shacira_nerf.image.field import KODAK_PRESET, ImageField, ImageFieldConfig
from shacira_nerf.image.image_file import read_image_file, write_image_file
from shacira_nerf.image.image_io import load_rgb_image
from shacira_nerf.image.level_picture import level_picture
from shacira_nerf.image.png_output import check_output, save_png
from shacira_nerf.image.train import fit_image, psnr, resolve_device, to_uint8

MAX_OUTPUT_PIXELS = MAX_IMAGE_PIXELS
"""Largest picture decompress/grid will render (8192 x 8192; as large as a file may claim): a typo in --scale should
not eat all memory."""


def _one_line(text: object) -> str:
    return escape(text)


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


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
    network_precision: Literal["float16", "float32", "int8"] = ImageFieldConfig.network_precision
    """How the file stores the latent decoder and the MLP: float16 (the default), int8 (int8 values and a float32
    scale per tensor: half of float16's bytes, which matters at low bpp where the networks are a large share of a
    small file) or float32 (as trained). The fit rounds them after its last step, so the printed PSNR is the file's."""
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
            network_precision=self.network_precision,
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
