"""The ``shacira`` command: export, info, view and render scene files; compress/decompress images.

Parsing only: the work lives in ``nerf/commands.py`` (nerfstudio) and ``image/cli.py``; nerfstudio and torch are
imported by the subcommands that need them, so ``shacira info`` answers quickly. Every user-facing failure (bad
paths, foreign or corrupted files, wrong settings) ends as one ``error: ...`` line and exit status 1.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import tyro
from typing_extensions import Annotated

from shacira_nerf.errors import UserError


@dataclass
class Export:
    """Entropy-code a trained shacira run into one .shac scene file."""

    load_config: Path
    """The run's config.yml (outputs/<scene>/shacira*/<timestamp>/config.yml)."""
    output_path: Path
    """Where to write the scene file (.shac); written to a temporary file, then renamed."""
    data: Optional[Path] = None
    """Dataset folder, if it moved since training (only its cameras are read, for the viewer)."""
    cameras: bool = True
    """Store the training cameras (poses and intrinsics) so that `shacira view` can show them."""

    def main(self) -> None:
        from shacira_nerf.nerf.commands import export

        export(self.load_config, self.output_path, self.data, self.cameras)


@dataclass
class Info:
    """Describe and verify a .shac file: sections and their bytes, total, bits per latent, ratios."""

    path: tyro.conf.Positional[Path]
    """The .shac file."""
    json: bool = False
    """Print JSON instead of text."""

    def main(self) -> None:
        from shacira_nerf.codec import read_file_bytes
        from shacira_nerf.report import file_report, format_report

        report = file_report(read_file_bytes(self.path))
        print(json.dumps(report, indent=2) if self.json else format_report(str(self.path), report))


@dataclass
class Render:
    """Render images or a video from a scene file alone (no dataset, no checkpoint)."""

    scene: tyro.conf.Positional[Path]
    """The .shac scene file."""
    output_path: Path = Path("renders")
    """A folder for PNG frames, or a .mp4 file."""
    camera_path: Optional[Path] = None
    """A nerfstudio camera-path JSON (as ns-render camera-path takes); default: the file's stored cameras."""
    downscale: float = 1.0
    """Divide the output resolution by this."""
    max_frames: Optional[int] = None
    """Render at most this many frames."""
    device: str = "auto"
    """cpu, cuda, or auto (cuda when available)."""

    def main(self) -> None:
        from shacira_nerf.nerf.commands import render

        render(self.scene, self.output_path, self.camera_path, self.downscale, _device(self.device), self.max_frames)


@dataclass
class View:
    """Open a scene file in nerfstudio's web viewer (no dataset, no checkpoint needed)."""

    scene: tyro.conf.Positional[Path]
    """The .shac scene file."""
    port: Optional[int] = None
    """Websocket port (default: the first free port from 7007)."""
    host: str = "127.0.0.1"
    """Interface to serve on (0.0.0.0 to reach it from other machines)."""
    device: str = "auto"
    """cpu, cuda, or auto (cuda when available)."""
    max_seconds: Optional[float] = None
    """Stop after this many seconds (default: until Ctrl-C)."""

    def main(self) -> None:
        from shacira_nerf.nerf.commands import view

        view(self.scene, self.port, self.host, _device(self.device), self.max_seconds)


def _device(name: str) -> str:
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"--device must be cpu, cuda or auto, got {name!r}")
    return name


def _image_commands():
    from shacira_nerf.image.cli import Compress, Decompress, Grid

    return Union[
        Annotated[Compress, tyro.conf.subcommand("compress")],
        Annotated[Decompress, tyro.conf.subcommand("decompress")],
        Annotated[Grid, tyro.conf.subcommand("grid")],
    ]


def _commands():
    return Union[
        Annotated[Export, tyro.conf.subcommand("export")],
        Annotated[Info, tyro.conf.subcommand("info")],
        Annotated[Render, tyro.conf.subcommand("render")],
        Annotated[View, tyro.conf.subcommand("view")],
    ]


def main(argv: Optional[list] = None) -> int:
    """Run the command line; returns the exit status."""
    from shacira_nerf.codec import ContainerError

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["image"]:
            command = tyro.cli(_image_commands(), args=args[1:], prog="shacira image")
        else:
            command = tyro.cli(_commands(), args=args, prog="shacira",
                               description="shacira: SHACIRA-compressed radiance fields (and images). "
                               "Image mode: `shacira image compress|decompress|grid --help`.")  # fmt: skip
        command.main()
    except (UserError, ContainerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `shacira info x | head`
        sys.stderr.close()
        return 0
    return 0


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
