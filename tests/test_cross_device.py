"""A scene file written on a GPU decodes on this CPU machine, bit for bit.

The fixture was trained (3000 iterations, λ = 0.1) and exported on the lent H200 (CUDA, torch 2.11, Python 3.12)
by ``benchmarks/gpu/train_eval.sh``; the tests run on CPUs with another torch. The file stores integer probability
tables, so decoding involves no floating point: the decoded integers must re-encode under the file's own tables to
exactly the file's coded bytes, and the scene must render from the file alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shacira_nerf.codec import unpack_array
from shacira_nerf.codec.coder import encode_symbols, table_bits, unpack_table
from shacira_nerf.codec.container import decode_container
from shacira_nerf.nerf.scene_file import decode_scene

FIXTURE = Path(__file__).parent / "fixtures" / "lego_h200_lambda0.1.shac"


def test_gpu_written_scene_decodes_bit_exactly_on_cpu() -> None:
    data = FIXTURE.read_bytes()
    header, sections = decode_container(data)
    assert header["producer"].startswith("shacira-nerf") and len(data) == 449_389
    scene = decode_scene(data, "cpu")
    assert set(scene.model.grids) == set(header["grids"])
    for name, grid in scene.model.grids.items():
        latents = grid.integer_latents().cpu().numpy().astype(np.int64)
        assert latents.size == header["grids"][name]["num_latents"]
        tables = [unpack_table(sections[f"{name}/table/{d}"]) for d in range(latents.shape[1])]
        offsets = grid.latents.offsets
        bits = 0.0
        for level in range(grid.geometry.num_levels):
            block = latents[offsets[level] : offsets[level + 1]]
            streams = [(block[:, d], tables[d]) for d in range(block.shape[1])]
            assert encode_symbols(streams) == sections[f"{name}/latents/{level}"], (name, level)
            bits += sum(table_bits(s, t) for s, t in streams)
        assert abs(bits - header["grids"][name]["shannon_bits"]) <= 1e-6 * bits


def test_gpu_written_scene_renders_on_cpu() -> None:
    scene = decode_scene(FIXTURE.read_bytes(), "cpu")
    cameras = scene.cameras
    assert cameras is not None and len(cameras) == 100
    cameras.rescale_output_resolution(24 / 400)  # a 24x24 view: enough to see it is the scene, fast on a CPU
    with torch.no_grad():
        rgb = scene.model.get_outputs_for_camera(cameras[0:1])["rgb"]
    assert rgb.shape == (24, 24, 3) and torch.isfinite(rgb).all()
    # lego on a white background: white corners, a coloured model in the middle (measured at 400x400 from this file:
    # 26.1 dB against the training view it was rendered from)
    assert rgb[0, 0].min() > 0.9 and rgb[-1, -1].min() > 0.9
    centre = rgb[8:16, 8:16]
    assert centre.mean() < 0.8 and (centre.max(dim=-1).values - centre.min(dim=-1).values).mean() > 0.1


def test_networks_rounded_to_float16_are_stored_as_float16_and_decode_exactly() -> None:
    """A model whose networks were rounded (as training does after its last step) is written with float16 network
    sections that decode to exactly its weights; a tensor float16 does not hold is kept as float32."""
    from shacira_nerf.nerf.scene_file import encode_scene

    model = decode_scene(FIXTURE.read_bytes(), "cpu").model  # written before network_precision: float32 networks
    assert model.config.network_precision == "float16"
    model.round_networks()
    with torch.no_grad():
        model.field.mlp_head.layers[0].weight[0, 0] = 1.0 + 2.0**-20  # not a float16 number
    data = encode_scene(model)
    _, sections = decode_container(data)
    stored = {name[len("network/") :]: unpack_array(p) for name, p in sections.items() if name.startswith("network/")}
    assert stored["field.mlp_head.layers.0.weight"].dtype == np.float32
    assert stored["field.mlp_base.1.layers.0.weight"].dtype == np.float16
    # all but that one and the appearance embedding's mean (a mean of float16 rows is not a float16 number)
    assert sum(a.dtype == np.float16 for a in stored.values()) == len(stored) - 2
    decoded = decode_scene(data, "cpu").model
    for name, tensor in model.stored_network_tensors().items():
        assert torch.equal(decoded.stored_network_tensors()[name], tensor), name
