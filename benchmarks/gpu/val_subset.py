"""Add a validation subset to a prepared Blender scene, for tuning on views that are not the test views.

    python3 benchmarks/gpu/val_subset.py SRC DEST [--every 4]

SRC is the full scene (``transforms_val.json`` and its images, e.g. ``data/real/lego``), DEST the carried copy made
by ``shared/gpu/prepare-blender-scene.sh`` (train and test views only). Every EVERY-th validation view is copied
into ``DEST/val/`` and listed in ``DEST/transforms_valsub.json``; ``bg.sh setup`` then builds a scene ``<DEST>_val``
on the GPU machine whose test (and val) split is that subset, so ``ns_bench.py run`` evaluates a tuning run on it.
lego: 25 of the 100 validation views, 3 MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("src", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--every", type=int, default=4)
    args = parser.parse_args()
    meta = json.loads((args.src / "transforms_val.json").read_text())
    meta["frames"] = meta["frames"][:: args.every]
    for frame in meta["frames"]:
        rel = frame["file_path"].removeprefix("./") + ".png"
        (args.dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.src / rel, args.dest / rel)
    (args.dest / "transforms_valsub.json").write_text(json.dumps(meta, indent=1))
    print(f"{len(meta['frames'])} validation views in {args.dest / 'transforms_valsub.json'}")


if __name__ == "__main__":
    main()
