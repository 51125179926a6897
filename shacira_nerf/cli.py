"""The ``shacira`` command: export, info, view and render scene files; ``shacira image ...`` for images.

Parsing only: the work lives in ``nerf/commands.py`` (nerfstudio) and ``image/cli.py``; nerfstudio and torch are
imported by the subcommands that need them, so ``shacira info`` answers quickly (its parser leaves ``image`` out;
every other parse, ``shacira --help`` included, has every verb). Every user-facing failure (bad paths, foreign,
corrupted or hostile files, wrong settings) ends as one line, ``error: <what>: <why>`` naming the file, and exit
status 1.
"""

from __future__ import annotations

import dataclasses
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
        from shacira_nerf.codec import naming, read_file_bytes
        from shacira_nerf.report import file_report, format_report

        with naming(self.path):
            report = file_report(read_file_bytes(self.path))
        print(json.dumps(report, indent=2) if self.json else format_report(str(self.path), report))


@dataclass
class Render:
    """Render images or a video from a scene file alone (no dataset, no checkpoint).

    By default it renders the training cameras stored in the file, one PNG each (renders/00000.png, 00001.png, ...,
    in the order of the training images); --camera-path renders a nerfstudio camera path instead.
    """

    scene: tyro.conf.Positional[Path]
    """The .shac scene file."""
    output_path: Path = Path("renders")
    """A folder for PNG frames (00000.png, ...), or a .mp4 file."""
    camera_path: Optional[Path] = None
    """A nerfstudio camera-path JSON (as ns-render camera-path takes); default: the file's stored training cameras."""
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


def _run_image_command(self) -> None:
    self.command.main()


def _image() -> type:
    """``shacira image``: a dataclass whose one field is the nested compress | decompress | grid subcommand."""
    from shacira_nerf.image.cli import COMMANDS

    choices = Union[tuple(Annotated[cls, tyro.conf.subcommand(name)] for name, cls in COMMANDS.items())]  # type: ignore
    doc = ("Compress an image into a .shac file, decompress one to PNG (--scale 2: super-resolution), or draw its "
           "per-level feature maps: the appendix's image experiments.")  # fmt: skip
    fields = [("command", Annotated[choices, tyro.conf.arg(name="")])]
    return dataclasses.make_dataclass("Image", fields, namespace={"__doc__": doc, "main": _run_image_command})


SCENE_VERBS = {"export": Export, "info": Info, "render": Render, "view": View}


def _commands(with_image: bool = True):
    verbs = [Annotated[cls, tyro.conf.subcommand(name)] for name, cls in SCENE_VERBS.items()]
    if with_image:
        verbs.append(Annotated[_image(), tyro.conf.subcommand("image")])
    return Union[tuple(verbs)]  # type: ignore


def main(argv: Optional[list] = None) -> int:
    """Run the command line; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # A scene verb does not need the image commands (whose import costs torch): `shacira info` stays torch-free.
        commands = _commands(with_image=not (args[:1] and args[0] in SCENE_VERBS))
        description = "shacira: SHACIRA-compressed radiance fields (scene files) and images (`shacira image`)."
        tyro.cli(commands, args=args, prog="shacira", description=description).main()
    except UserError as exc:
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
