"""What storing a scene's networks as float16 or int8 costs in quality: the same rays rendered at each precision.

Loads a `.shac` scene file (float32 networks, as files written before `network_precision` store them; a file with
float16 networks measures int8 from its float16 weights), renders the
same random pixels of a Blender scene's test views with its networks as stored, rounded to float16 and rounded to
int8 (``ShaciraModel.round_networks``; each from the float32 weights, no retraining), and reports PSNR of each against
the ground truth (white background), the difference, and the network bytes at each precision (payloads: values, and
int8's scales). int8 is measured twice: with the scale ``round_networks`` chooses (least squared error) and with
max|w| / 127 ("int8_peak"), to show what the choice buys. CPU is enough: a few thousand rays.

    python benchmarks/network_precision.py tests/fixtures/lego_h200_lambda0.1.shac data/real/lego --rays 16384
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


def psnr(a: torch.Tensor, b: torch.Tensor):
    """PSNR in dB (peak 1); None where the two are equal (a file whose networks are float16 already renders the
    same at float16)."""
    mse = float(torch.mean((a - b) ** 2))
    return None if mse == 0 else -10.0 * math.log10(mse)


def network_bytes(model, precision: str) -> int:
    """Payload bytes of the model's networks as a file at ``precision`` stores them (int8: values and scales)."""
    from shacira_nerf.core.precision import storage_array

    stored = [storage_array(t, precision) for t in model.stored_network_tensors().values()]
    return sum(a[0].nbytes + 4 if isinstance(a, tuple) else a.nbytes for a in stored)


def rounded_render(model, float32, precision: str, render, factors=None):
    """Render with the float32 weights rounded to ``precision`` (int8 with the scale factors ``factors`` if given),
    then put the float32 weights back; returns the render and the network bytes at that precision."""
    import numpy as np

    from shacira_nerf.core import precision as networks

    model.config.network_precision = precision
    if factors is None:
        model.round_networks()
    else:
        with torch.no_grad():
            for t in model.stored_network_tensors().values():
                rounded = networks.int8_round(t.cpu().numpy(), np.asarray(factors, dtype=np.float32))
                if rounded is not None:
                    t.copy_(torch.from_numpy(rounded))
    size = network_bytes(model, precision)
    rgb = render()
    with torch.no_grad():
        for name, t in model.stored_network_tensors().items():
            t.copy_(float32[name])
    return rgb, size


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

    float32 = {name: t.clone() for name, t in model.stored_network_tensors().items()}
    bytes32 = network_bytes(model, "float32")
    rgb32 = render_rays(model, cameras, idx, coords)
    rgb16, bytes16 = rounded_render(model, float32, "float16", lambda: render_rays(model, cameras, idx, coords))
    rgb8, bytes8 = rounded_render(model, float32, "int8", lambda: render_rays(model, cameras, idx, coords))
    rgb8_peak, _ = rounded_render(model, float32, "int8", lambda: render_rays(model, cameras, idx, coords),
                                  factors=(1.0,))  # fmt: skip
    result = {
        "date": today(), "machine": machine(), "command": command_line(), "file": args.scene.name,
        "file_bytes": loaded.file_bytes, "rays": args.rays, "test_views": len(images),
        "psnr_float32": psnr(rgb32, target), "psnr_float16": psnr(rgb16, target),
        "psnr_between": psnr(rgb16, rgb32), "network_bytes_float32": bytes32, "network_bytes_float16": bytes16,
    }  # fmt: skip
    result["psnr_change"] = result["psnr_float16"] - result["psnr_float32"]
    result.update({
        "psnr_int8": psnr(rgb8, target), "psnr_between_int8": psnr(rgb8, rgb32), "network_bytes_int8": bytes8,
        "psnr_int8_peak": psnr(rgb8_peak, target), "psnr_between_int8_peak": psnr(rgb8_peak, rgb32),
    })  # fmt: skip
    result["psnr_change_int8"] = result["psnr_int8"] - result["psnr_float32"]
    result["psnr_change_int8_peak"] = result["psnr_int8_peak"] - result["psnr_float32"]
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
