"""Copy a nerfstudio-data capture (e.g. the instant-ngp fox) into a folder small enough to carry to the GPU machine.

Why: nerfacto's defaults on a nerfstudio-data capture pick the image downscale themselves (nerfstudio's dataparser
halves a 1920-pixel side until it is at most 1600, but only into ``images_2``, ``images_4``... folders that already
exist: it never writes them, ``nerfstudio_dataparser.py:461-490``). The fox's 67 frames are 1080x1920, so nerfstudio
would train on ``images_2`` at 540x960 if it were there, and on the full frames otherwise. This script writes the
copy nerfstudio expects (``transforms.json``, the original ``images/``, and ``images_2/`` downscaled with Pillow's
Lanczos filter, JPEG quality 95), so the GPU runs see what a user's ``ns-process-data`` output would give them.

    python benchmarks/gpu/prepare_capture.py data/real/fox .gpu/fox      # then carry .gpu/fox (about 30 MB)

The held-out split is chosen at training time (``PARSER_ARGS="--eval-mode interval --eval-interval 8"`` for
``train_eval.sh``: every 8th frame is a test view, 9 of the fox's 67).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from PIL import Image


class BadFrame(Exception):
    """A frame that Pillow cannot read (reported as one line, after the partial copy is removed)."""


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="capture folder with transforms.json and the frames it names")
    parser.add_argument("dest", type=Path, help="output folder (must not exist)")
    parser.add_argument("--factor", type=int, default=2, help="downscale of the images_<factor> copy (default 2)")
    args = parser.parse_args()
    meta_path = args.src / "transforms.json"
    if not meta_path.is_file():
        fail(f"{meta_path}: not found (a nerfstudio-data capture has a transforms.json)")
    if args.dest.exists():
        fail(f"{args.dest}: already exists (remove it first)")
    if args.factor < 2:
        fail(f"--factor {args.factor}: must be >= 2")
    try:
        meta = json.loads(meta_path.read_text())
        frames = [Path(f["file_path"]) for f in meta["frames"]]
    except (ValueError, KeyError, TypeError) as exc:
        fail(f"{meta_path}: not a transforms.json with frames[].file_path ({type(exc).__name__})")
    outside = [str(p) for p in frames if p.is_absolute() or ".." in p.parts]
    if outside:
        fail(f"{meta_path}: frame path {outside[0]!r} leaves the capture folder (absolute or with '..')")
    missing = [str(p) for p in frames if not (args.src / p).is_file()]
    if missing:
        fail(f"{args.src}: {len(missing)} frames named in transforms.json are missing, e.g. {missing[0]!r}")
    args.dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=args.dest.name + ".", dir=args.dest.parent))
    try:
        shutil.copy2(meta_path, tmp / "transforms.json")
        small_dir = tmp / f"images_{args.factor}"
        small_dir.mkdir()
        for rel in frames:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(args.src / rel, tmp / rel)
            try:
                with Image.open(args.src / rel) as im:
                    w, h = im.size
                    small = im.convert("RGB").resize(
                        (max(1, round(w / args.factor)), max(1, round(h / args.factor))), Image.Resampling.LANCZOS
                    )
            except (OSError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError
                raise BadFrame(f"{args.src / rel}: not a readable image ({type(exc).__name__})") from None
            small.save(small_dir / rel.name, quality=95)
        os.replace(tmp, args.dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, BadFrame):
            fail(str(exc))
        raise
    print(f"wrote {args.dest}: {len(frames)} frames, images/ and images_{args.factor}/")


if __name__ == "__main__":
    main()
