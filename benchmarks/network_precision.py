"""What storing a scene's networks as float16 costs in quality: the same rays rendered with float32 and float16 weights.

Loads a `.shac` scene file (float32 networks, as files written before `network_precision` store them), renders the
same random pixels of a Blender scene's test views with its networks as stored and rounded to float16
(``ShaciraModel.round_networks``), and reports PSNR of each against the ground truth (white background), the
difference, and the network bytes at each precision. CPU is enough: a few thousand rays.

    python benchmarks/network_precision.py tests/fixtures/lego_h200_lambda0.1.shac data/real/lego --rays 8192
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine, today  # noqa: E402


def render_rays(model, cameras, camera_indices, coords, chunk: int = 1024) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for start in range(0, coords.shape[0], chunk):
            bundle = cameras.generate_rays(
                camera_indices=camera_indices[start : start + chunk].unsqueeze(-1), coords=coords[start : start + chunk]
            )
            out.append(model(bundle)["rgb"])
    return torch.cat(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10.0 * math.log10(float(torch.mean((a - b) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", type=Path)
    parser.add_argument("data", type=Path, help="the Blender scene folder (transforms_test.json)")
    parser.add_argument("--rays", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
    from nerfstudio.data.datasets.base_dataset import InputDataset

    from shacira_nerf.core.precision import storage_array
    from shacira_nerf.nerf.scene_file import load_scene

    loaded = load_scene(args.scene)
    model = loaded.model.eval()
    outputs = BlenderDataParserConfig(data=args.data).setup().get_dataparser_outputs(split="test")
    dataset = InputDataset(outputs)
    cameras = outputs.cameras
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randint(0, len(dataset), (args.rays,), generator=g)
    h, w = int(cameras.height[0]), int(cameras.width[0])
    ys, xs = torch.randint(0, h, (args.rays,), generator=g), torch.randint(0, w, (args.rays,), generator=g)
    images = {int(i): dataset.get_image_float32(int(i)) for i in idx.unique()}
    rgba = torch.stack([images[int(i)][int(y), int(x)] for i, y, x in zip(idx, ys, xs)])
    target = rgba[:, :3] * rgba[:, 3:] + (1.0 - rgba[:, 3:]) if rgba.shape[1] == 4 else rgba[:, :3]
    coords = torch.stack([ys.float() + 0.5, xs.float() + 0.5], dim=-1)

    tensors = model.stored_network_tensors()
    bytes32 = sum(storage_array(t, "float32").nbytes for t in tensors.values())
    rgb32 = render_rays(model, cameras, idx, coords)
    model.round_networks()
    bytes16 = sum(storage_array(t, "float16").nbytes for t in model.stored_network_tensors().values())
    rgb16 = render_rays(model, cameras, idx, coords)
    result = {
        "date": today(), "machine": machine(), "command": command_line(), "file": args.scene.name,
        "file_bytes": loaded.file_bytes, "rays": args.rays, "test_views": len(images),
        "psnr_float32": psnr(rgb32, target), "psnr_float16": psnr(rgb16, target),
        "psnr_between": psnr(rgb16, rgb32), "network_bytes_float32": bytes32, "network_bytes_float16": bytes16,
    }  # fmt: skip
    result["psnr_change"] = result["psnr_float16"] - result["psnr_float32"]
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
