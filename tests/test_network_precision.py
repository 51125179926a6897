"""Network precisions (``core/precision.py``): int8 tensors with a per-tensor scale, through real files, bit-exactly.

No training: a scene model and an image field are built small, their networks rounded as training's last step
rounds them (``round_networks``), written, read back and compared number for number.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import small_scene_model

from shacira_nerf.codec import (
    ContainerError,
    decode_container,
    dequantize_int8,
    pack_array,
    pack_scaled_int8,
    unpack_scaled_int8,
)
from shacira_nerf.core.precision import (
    SCALE_BYTES,
    int8_encode,
    int8_round,
    round_to_precision_,
    storage_array,
    stored_network_bytes,
)
from shacira_nerf.report import file_report, format_report


def _int8_sections(data: bytes) -> dict:
    """The file's network sections that hold int8 values, decoded to (values, scale) by name."""
    _, sections = decode_container(data)
    out = {}
    for name, payload in sections.items():
        if name.startswith("network/") and payload[0] == 4:  # ARRAY_DTYPES code of int8
            out[name[len("network/") :]] = payload
    return out


def test_int8_rounding_is_idempotent_and_recovered_exactly() -> None:
    """Rounding twice changes nothing, and the rounded tensor is stored as int8 values and a scale that decode to
    exactly it; tiny, all-zero and non-finite tensors are left to float16 (int8 saves nothing or cannot hold them)."""
    torch.manual_seed(0)
    tensors = [torch.randn(64, 63) * 0.3, torch.randn(16, 2, 4) * 5.0, torch.randn(64) * 1e-3, torch.randn(3)]
    round_to_precision_(tensors, "int8")
    once = [t.clone() for t in tensors]
    round_to_precision_(tensors, "int8")
    assert all(torch.equal(a, b) for a, b in zip(once, tensors))
    for t in tensors[:3]:
        values, scale = storage_array(t, "int8")
        assert values.dtype == np.int8 and np.abs(values).max() == 127 and values.min() >= -127
        assert np.array_equal(dequantize_int8(values, scale), t.numpy())
    assert len(np.unique(storage_array(tensors[0], "int8")[0])) > 150  # a real grid, not a few levels
    tiny = storage_array(tensors[3], "int8")
    assert isinstance(tiny, np.ndarray) and tiny.dtype == np.float16 and tensors[3].numel() <= SCALE_BYTES
    assert int8_round(np.zeros(10, np.float32)) is None and int8_encode(np.zeros(10, np.float32)) is None
    assert int8_round(np.array([1.0, np.inf, 0, 0, 0, 0], np.float32)) is None
    unrounded = torch.randn(100)
    assert storage_array(unrounded, "int8").dtype == np.float32  # not on any int8 grid: stored as trained


def test_int8_scale_search_is_never_worse_than_the_peak_scale() -> None:
    """The least-squares scale is never worse than max|w| / 127 (one of its candidates), and better on heavy-tailed
    weights, whose few large values the peak scale spends most of the grid on."""
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(10):
        arr = rng.laplace(0, 0.1, 4096).astype(np.float32)
        searched, peak = int8_round(arr), int8_round(arr, np.array([1.0], np.float32))
        errors.append((np.sum((searched - arr) ** 2), np.sum((peak - arr) ** 2)))
        assert errors[-1][0] <= errors[-1][1]
    assert sum(e for e, _ in errors) < 0.98 * sum(e for _, e in errors)
    arr = np.linspace(-1, 1, 255, dtype=np.float32)  # already on the peak grid: nothing to gain
    assert np.array_equal(int8_round(arr), int8_round(arr, np.array([1.0], np.float32)))


def test_stored_network_bytes_counts_values_and_scales() -> None:
    assert stored_network_bytes([100, 3], "int8") == 100 + SCALE_BYTES + 2 * 3
    assert stored_network_bytes([100, 3], "float16") == 206
    assert stored_network_bytes([100, 3], "float32") == 412
    with pytest.raises(ValueError, match="unknown network precision 'int4'"):
        stored_network_bytes([1], "int4")


def test_scaled_int8_payload_is_checked_against_the_expected_shape() -> None:
    values = np.arange(-6, 6, dtype=np.int8).reshape(3, 4)
    payload = pack_scaled_int8(values, 0.25)
    got, scale = unpack_scaled_int8(payload, (3, 4))
    assert np.array_equal(got, values) and scale == 0.25
    with pytest.raises(ContainerError, match=r"int8 \(4, 3\) with its scale takes"):
        unpack_scaled_int8(payload[:-1], (4, 3))
    with pytest.raises(ContainerError, match=r"does not hold an int8 array of shape \(4, 3\)"):
        unpack_scaled_int8(payload, (4, 3))  # same length, other shape
    with pytest.raises(ContainerError, match="with its scale takes"):
        unpack_scaled_int8(pack_array(values), (3, 4))  # no scale
    with pytest.raises(ValueError, match="must be int8"):
        pack_scaled_int8(values.astype(np.int16), 1.0)


def test_scene_file_stores_int8_networks_bit_exactly() -> None:
    """A scene at network_precision int8: after rounding, the file holds int8 sections with scales, a quarter of
    the float32 bytes and half of float16's, and decodes to exactly the rounded weights."""
    from shacira_nerf.nerf.scene_file import decode_scene, encode_scene

    model = small_scene_model(network_precision="int8")
    model.round_networks()
    tensors = model.stored_network_tensors()
    data = encode_scene(model)
    decoded = decode_scene(data).model.stored_network_tensors()
    for name, tensor in tensors.items():
        assert torch.equal(decoded[name], tensor), name
    int8 = _int8_sections(data)
    large = [
        n for n, t in tensors.items() if t.numel() > SCALE_BYTES and n != "field.embedding_appearance.embedding.weight"
    ]
    assert sorted(int8) == sorted(large)
    payload = sum(len(p) for p in int8.values())
    numbers = sum(tensors[n].numel() for n in int8)
    assert payload < 0.3 * 4 * numbers and payload < 0.6 * 2 * numbers
    report = file_report(data)
    assert report["network_precisions"] == {"int8": len(int8), "float16": len(tensors) - len(int8) - 1, "float32": 1}
    assert f"stored as int8 with a float32 scale ({len(int8)} tensors)" in format_report("s.shac", report)
    assert model.estimate_size()["network_MB"] * 1e6 == pytest.approx(
        stored_network_bytes([t.numel() for t in tensors.values()], "int8")
    )


def test_image_file_stores_int8_networks_bit_exactly() -> None:
    from shacira_nerf.image.field import ImageField, ImageFieldConfig
    from shacira_nerf.image.image_file import decode_image_file, encode_image_file

    torch.manual_seed(0)
    field = ImageField(ImageFieldConfig(num_levels=4, log2_hashmap_size=8, implementation="torch",
                                        network_precision="int8"), 16, 16)  # fmt: skip
    with torch.no_grad():
        for t in field.network_tensors().values():
            t.add_(torch.randn_like(t) * 0.05)
    field.round_networks()
    field.eval()
    data = encode_image_file(field)
    decoded = decode_image_file(data)
    for name, tensor in field.network_tensors().items():
        assert torch.equal(decoded.network_tensors()[name], tensor), name
    assert torch.equal(decoded.render(), field.render())
    assert set(_int8_sections(data)) == {n for n, t in field.network_tensors().items() if t.numel() > SCALE_BYTES}


def test_unknown_network_precision_is_a_config_error() -> None:
    from shacira_nerf.image.field import ImageConfigError, ImageFieldConfig
    from shacira_nerf.nerf.model import ShaciraConfigError, ShaciraModelConfig

    with pytest.raises(ShaciraConfigError, match="network_precision must be one of float16, float32, int8, got 'int4'"):
        ShaciraModelConfig(network_precision="int4")
    with pytest.raises(ImageConfigError, match="network_precision must be one of"):
        ImageFieldConfig(network_precision="int4")  # type: ignore[arg-type]
