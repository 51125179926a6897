"""Tests for image mode: fitting, the image file, the commands and their one-line errors.

Small generated images keep the whole file fast on a 2-core CPU: a 48x48 gradient with shapes for round trips, and
a larger smooth image for the claim that compression really happens (a real file under 1 bpp above 30 dB).
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from shacira_nerf.codec import ContainerError, encode_container
from shacira_nerf.core.lookup import CornerCacheLookup, MatrixLookup
from shacira_nerf.errors import UserError
from shacira_nerf.image.batch import BatchedImageFields
from shacira_nerf.image.cli import Compress, Decompress, Grid
from shacira_nerf.image.field import ImageConfigError, ImageField, ImageFieldConfig, pixel_centres
from shacira_nerf.image.image_file import decode_image_file, encode_image_file, read_image_file
from shacira_nerf.image.image_io import load_rgb_image
from shacira_nerf.image.pixel_lookup import PixelLookup
from shacira_nerf.image.train import fit_image, fit_images, psnr, to_uint8
from shacira_nerf.report import file_report

SMALL = ImageFieldConfig(num_levels=8, log2_hashmap_size=10, entropy_refit_steps=100)
"""A small field for fast round-trip tests (the file format and code paths do not depend on the size)."""

QUANTIZERS = ("soft_round", "sga")
"""The training-time rounding modes: the determinism and batching tests run in both."""


def shapes_image(h: int = 48, w: int = 48) -> np.ndarray:
    """A smooth gradient with a rectangle and a disc: edges and flat regions."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([x / w, y / h, 0.5 + 0.3 * np.sin(x / 7.0)], axis=-1)
    img[h // 6 : h // 2, w // 5 : w // 2] = (0.9, 0.2, 0.1)
    img[(y - 0.65 * h) ** 2 + (x - 0.7 * w) ** 2 < (0.18 * h) ** 2] = (0.1, 0.3, 0.9)
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def smooth_image(h: int, w: int) -> np.ndarray:
    """Smooth colour variations only (what a few coarse grid levels represent well)."""
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w], dtype=np.float64)[:, None, None]
    r = 0.5 + 0.4 * np.sin(2 * np.pi * x) * np.cos(np.pi * y)
    g = 0.3 + 0.5 * x * y
    b = 0.5 + 0.3 * np.exp(-((x - 0.6) ** 2 + (y - 0.4) ** 2) / 0.05)
    return np.round(np.clip(np.stack([r, g, b], -1), 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a busy 2-core machine two OpenMP threads make these small ops ~5x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fitted() -> tuple:
    """(image, field) fitted briefly on the shapes image."""
    image = shapes_image()
    return image, fit_image(image, SMALL, steps=120, seed=0, progress=False)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """(folder, input PNG, .shac, CompressResult) of one run of the compress command."""
    folder = tmp_path_factory.mktemp("image")
    image = shapes_image()
    Image.fromarray(image).save(folder / "in.png")
    result = Compress(folder / "in.png", folder / "out.shac", steps=80, log2_entries=13, progress=False).main()
    return folder, image, folder / "out.shac", result


def _one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


# -------------------------------------------------------------------------------------------- field, training


def test_pixel_centres_and_render_size() -> None:
    x = pixel_centres(2, 4)
    assert torch.allclose(x[0], torch.tensor([0.25, 0.125])) and torch.allclose(x[-1], torch.tensor([0.75, 0.875]))
    field = ImageField(SMALL, 5, 7).eval()
    assert field.render().shape == (5, 7, 3) and field.render(11, 3).shape == (11, 3, 3)
    assert field.config.max_res == 7 and field.config.min_res == 7  # resolved for a tiny image


def test_cached_corners_match_grid_forward() -> None:
    """The trainer's random-pixel lookup (corners cached once) equals the grid's own lookup at those pixels."""
    field = ImageField(SMALL, 20, 30)
    field.train()
    corners = CornerCacheLookup(field.grid.geometry, pixel_centres(20, 30))
    index = torch.tensor([0, 5, 599, 123])
    table = field.grid.lookup_latents()  # one sample of the (stochastic) quantizer for both paths
    expected = field.grid(pixel_centres(20, 30)[index], table)
    assert torch.allclose(field.grid.decoder.per_level(corners(table, index=index)), expected, atol=1e-6)
    wide = torch.cat([table] * 6, dim=1)  # a stacked table (six members' columns) gathers whole rows
    assert torch.allclose(corners(wide, index=index), corners(table, index=index).repeat(1, 1, 6), atol=1e-6)


def test_pixel_lookup_keeps_members_apart_across_table_sizes() -> None:
    """Members of two table sizes, interleaved: each gets its own table's values at the pixels, in member order,
    whole-image and random-pixel alike."""
    configs = [SMALL, dataclasses.replace(SMALL, log2_hashmap_size=8), SMALL]
    fields = [ImageField(c, 12, 10) for c in configs]
    stack = BatchedImageFields(fields)
    q = stack.latents.masked(stack.latents.values.detach() + torch.randn_like(stack.latents.values))
    index = torch.tensor([3, 0, 119, 57])
    x = pixel_centres(12, 10)
    for whole, idx in ((True, None), (False, index)):
        lookup = PixelLookup([f.grid.geometry for f in fields], 12, 10, "cpu", "torch", whole_image=whole)
        out = lookup(q, idx)
        for i, f in enumerate(fields):
            rows = f.grid.latents.num_rows
            expected = f.grid.lookup(q[i, :rows], x if idx is None else x[idx])
            assert torch.allclose(out[i], expected, atol=1e-6), (whole, i)


def test_quantizer_settings_are_checked_in_one_line() -> None:
    for bad in ({"quantizer": "gumbel"}, {"sga_temperature_end": 0.0}, {"sga_temperature_start": 0.05}):
        with pytest.raises(ImageConfigError) as excinfo:
            ImageFieldConfig(**bad)
        assert next(iter(bad)) in _one_line_error(excinfo)


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_fit_is_deterministic_per_seed(quantizer: str) -> None:
    image = shapes_image(24, 24)
    config = dataclasses.replace(SMALL, quantizer=quantizer)
    a = fit_image(image, config, steps=15, seed=3, progress=False)
    b = fit_image(image, config, steps=15, seed=3, progress=False)
    c = fit_image(image, config, steps=15, seed=4, progress=False)
    assert torch.equal(a.render(), b.render())
    assert encode_image_file(a) == encode_image_file(b)
    assert not torch.equal(a.render(), c.render())


def test_random_pixel_batches_train_too() -> None:
    image = shapes_image(32, 32)
    cfg = ImageFieldConfig(num_levels=8, log2_hashmap_size=10, batch_pixels=256)
    field = fit_image(image, cfg, steps=200, seed=0, progress=False)
    assert psnr(to_uint8(field.render()), image) > 22.0  # 25.0 measured (SGA and soft rounding alike)


# ----------------------------------------------------------------------------------------------- image file


def test_file_round_trip_is_bit_identical(fitted: tuple) -> None:
    image, field = fitted
    data = encode_image_file(field)
    assert encode_image_file(field) == data  # deterministic bytes
    decoded = decode_image_file(data)
    assert not decoded.training
    assert torch.equal(decoded.grid.integer_latents(), field.grid.integer_latents())
    assert torch.equal(decoded.render(), field.render())
    assert torch.equal(decoded.render(96, 96), field.render(96, 96))
    assert psnr(to_uint8(decoded.render()), image) > 20.0


def test_report_bpp_is_file_bits_per_pixel(fitted: tuple) -> None:
    _, field = fitted
    data = encode_image_file(field)
    report = file_report(data)
    assert report["kind"] == "image" and report["image_size"] == [48, 48]
    assert report["bpp"] == 8 * len(data) / (48 * 48)
    assert report["num_latents"] == field.num_latents() and report["bytes_by_kind"]["latents"] > 0
    assert set(report["bytes_by_kind"]) >= {"header", "latents", "networks", "entropy_tables"}


def test_scene_and_foreign_files_are_rejected_in_one_line() -> None:
    scene = encode_container({"kind": "nerfstudio-scene"}, [])
    with pytest.raises(ContainerError) as excinfo:
        decode_image_file(scene)
    assert "shacira render" in _one_line_error(excinfo) and "shacira view" in str(excinfo.value)
    buf = io.BytesIO()
    Image.fromarray(shapes_image(8, 8)).save(buf, format="PNG")
    with pytest.raises(ContainerError) as excinfo:
        decode_image_file(buf.getvalue())
    assert "PNG" in _one_line_error(excinfo)


def test_damaged_file_is_one_line_error(fitted: tuple) -> None:
    data = bytearray(encode_image_file(fitted[1]))
    data[len(data) // 2] ^= 0x10
    with pytest.raises(ContainerError) as excinfo:
        decode_image_file(bytes(data))
    _one_line_error(excinfo)
    with pytest.raises(ContainerError):
        decode_image_file(bytes(data[:-3]))


def test_smooth_image_compresses_below_1_bpp_above_30_db() -> None:
    """Compression really happens: a real file, decoded, under 1 bit per pixel at more than 30 dB."""
    image = smooth_image(256, 256)
    # 8 levels of 2^10 rows suit a smooth image. The appendix's latent learning rate (0.01) is meant for ~60k steps:
    # in 300 it lets the latents reach only about +-3, too coarse for smooth ramps, so this short run uses 0.05.
    config = ImageFieldConfig(num_levels=8, log2_hashmap_size=10, lr_latents=0.05)
    field = fit_image(image, config, steps=300, seed=0, progress=False)
    data = encode_image_file(field)
    bpp = 8 * len(data) / (256 * 256)
    quality = psnr(to_uint8(decode_image_file(data).render()), image)
    print(f"smooth 256x256: {len(data)} bytes, {bpp:.3f} bpp, PSNR {quality:.2f} dB")
    assert bpp < 1.0
    assert quality > 30.0


# ------------------------------------------------------------------------------------------------- commands


def test_compress_reports_file_bpp_and_psnr(compressed: tuple) -> None:
    folder, image, shac, result = compressed
    size = os.path.getsize(shac)
    assert result.file_bytes == size
    assert result.bpp == 8 * size / (48 * 48)
    assert file_report(shac.read_bytes())["bpp"] == result.bpp
    field = read_image_file(shac)
    assert result.psnr == psnr(to_uint8(field.render()), image)
    assert not list(folder.glob(".*.tmp"))


def test_compress_with_int8_networks_writes_a_smaller_file_it_measured(compressed: tuple) -> None:
    """`--network-precision int8`: the same fit (same seed, so the same latents), its networks stored as int8 with a
    scale, in a smaller file; the printed PSNR is the decoded file's."""
    from shacira_nerf.codec import decode_container

    folder, image, shac16, result16 = compressed
    shac8 = folder / "int8.shac"
    result8 = Compress(folder / "in.png", shac8, steps=80, log2_entries=13, progress=False,
                       network_precision="int8").main()  # fmt: skip
    _, sections = decode_container(shac8.read_bytes())
    int8 = [name for name, payload in sections.items() if name.startswith("network/") and payload[0] == 4]
    assert int8, "no network tensor stored as int8"
    assert result8.file_bytes == os.path.getsize(shac8) < result16.file_bytes
    assert result8.psnr == psnr(to_uint8(read_image_file(shac8).render()), image)
    assert abs(result8.psnr - result16.psnr) < 1.0, (result8.psnr, result16.psnr)  # 8-bit weights, the same fit


def test_decompress_matches_the_models_rendering(compressed: tuple) -> None:
    folder, _, shac, _ = compressed
    Decompress(shac, folder / "out.png").main()
    decoded = np.asarray(Image.open(folder / "out.png"))
    assert np.array_equal(decoded, to_uint8(read_image_file(shac).render()))


@pytest.mark.parametrize(("scale", "size"), [(2.0, (96, 96)), (0.5, (24, 24)), (1.5, (72, 72))])
def test_super_resolution_size(compressed: tuple, scale: float, size: tuple) -> None:
    folder, _, shac, _ = compressed
    out = folder / f"x{scale}.png"
    assert Decompress(shac, out, scale=scale).main() == size
    with Image.open(out) as im:
        assert (im.height, im.width) == size and im.mode == "RGB"


def test_grid_picture(compressed: tuple) -> None:
    folder, _, shac, _ = compressed
    h, w = Grid(shac, folder / "grid.png").main()
    with Image.open(folder / "grid.png") as im:
        assert (im.height, im.width) == (h, w)
    levels = read_image_file(shac).config.num_levels
    cols = int(np.ceil(np.sqrt(levels)))
    assert w == cols * 48 + (cols + 1) * 4


# ----------------------------------------------------------------------------------------------- bad inputs


def _png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def _png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG (Pillow cannot write 16-bit RGB): gray (HxW) or RGB (HxWx3)."""
    h, w = array.shape[:2]
    color = 0 if array.ndim == 2 else 2
    raw = b"".join(b"\x00" + array[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_image_modes_are_converted_with_a_note(tmp_path: Path) -> None:
    rgb = shapes_image(6, 5)
    gray = rgb[..., 0]
    rgba = np.dstack([rgb, np.full((6, 5), 128, np.uint8)])
    cases = {
        "gray.png": (_png_bytes(gray), np.repeat(gray[..., None], 3, 2), "grayscale"),
        "rgba.png": (_png_bytes(rgba), None, "white"),
        "opaque.png": (_png_bytes(np.dstack([rgb, np.full((6, 5), 255, np.uint8)])), rgb, "opaque"),
        "gray16.png": (_png16(gray.astype(np.uint16) * 257), np.repeat(gray[..., None], 3, 2), "16-bit"),
        "rgb16.png": (_png16(rgb.astype(np.uint16) * 257), rgb, "16-bit"),
    }
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    buf = io.BytesIO()
    palette.save(buf, format="PNG")
    cases["palette.png"] = (buf.getvalue(), np.asarray(palette.convert("RGB")), "palette")
    for name, (data, expected, word) in cases.items():
        (tmp_path / name).write_bytes(data)
        arr, notes = load_rgb_image(tmp_path / name)
        assert arr.dtype == np.uint8 and arr.shape == (6, 5, 3), name
        assert len(notes) == 1 and word in notes[0] and "\n" not in notes[0], (name, notes)
        if expected is not None:
            assert np.array_equal(arr, expected), name
    arr, _ = load_rgb_image(tmp_path / "rgba.png")  # half-transparent on white: (c + 255) / 2
    assert np.abs(arr.astype(int) - (rgb.astype(int) * 128 + 255 * 127) / 255).max() <= 1
    (tmp_path / "rgb.png").write_bytes(_png_bytes(rgb))
    assert load_rgb_image(tmp_path / "rgb.png")[1] == []


def _zero_width_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 0, 4, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_bad_inputs_to_compress_are_one_line_errors(tmp_path: Path, compressed: tuple) -> None:
    (tmp_path / "text.png").write_text("not an image at all\n")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "zero.png").write_bytes(_zero_width_png())
    (tmp_path / "ok.png").write_bytes(_png_bytes(shapes_image(8, 8)))
    (tmp_path / "truncated.png").write_bytes(_png_bytes(shapes_image(40, 40))[:-40])
    cases = {
        "text.png": "not an image",
        "empty.png": "empty",
        "zero.png": "no pixels",
        "missing.png": "no such file",
        "truncated.png": "truncated",
    }
    for name, words in cases.items():
        with pytest.raises(UserError) as excinfo:
            Compress(tmp_path / name, tmp_path / "x.shac", steps=1, progress=False).main()
        assert words in _one_line_error(excinfo), (name, str(excinfo.value))
    with pytest.raises(UserError) as excinfo:
        Compress(compressed[2], tmp_path / "x.shac", steps=1, progress=False).main()
    assert "already a shacira file" in _one_line_error(excinfo)
    with pytest.raises(UserError) as excinfo:
        Compress(tmp_path / "ok.png", tmp_path / "nope" / "x.shac", steps=1, progress=False).main()
    assert "does not exist" in _one_line_error(excinfo)
    with pytest.raises(UserError) as excinfo:
        Compress(tmp_path / "ok.png", tmp_path / "x.shac", steps=1, log2_entries=30, progress=False).main()
    assert "log2-entries" in _one_line_error(excinfo)
    assert not (tmp_path / "x.shac").exists() and not list(tmp_path.glob(".*.tmp"))


def test_bad_inputs_to_decompress_and_grid_are_one_line_errors(tmp_path: Path, compressed: tuple) -> None:
    shac = compressed[2]
    (tmp_path / "scene.shac").write_bytes(encode_container({"kind": "nerfstudio-scene"}, []))
    (tmp_path / "pic.png").write_bytes(_png_bytes(shapes_image(8, 8)))
    for command in (Decompress, Grid):
        for source, words in [
            ("scene.shac", "shacira render"),
            ("pic.png", "not a shacira file"),
            ("no.shac", "no such"),
        ]:
            with pytest.raises(UserError) as excinfo:
                command(tmp_path / source, tmp_path / "out.png").main()
            assert words in _one_line_error(excinfo), (command.__name__, source)
            assert isinstance(excinfo.value, (UserError, ContainerError))
        with pytest.raises(UserError) as excinfo:
            command(shac, tmp_path / "missing" / "out.png").main()
        assert "does not exist" in _one_line_error(excinfo)
    with pytest.raises(UserError) as excinfo:
        Decompress(shac, tmp_path / "out.png", scale=0.0).main()
    assert "--scale" in _one_line_error(excinfo)
    with pytest.raises(UserError) as excinfo:
        Decompress(shac, tmp_path / "out.jpg").main()
    assert ".png" in _one_line_error(excinfo)
    assert not list(tmp_path.glob("*out*"))


def test_command_line_prints_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    (tmp_path / "scene.shac").write_bytes(encode_container({"kind": "nerfstudio-scene"}, []))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "shacira_nerf.image.cli",
            "decompress",
            str(tmp_path / "scene.shac"),
            str(tmp_path / "o.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 1
    # One line in the form `error: <file>: <why>`, naming the file.
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith(f"error: {tmp_path / 'scene.shac'}: not an image file")
    assert not (tmp_path / "o.png").exists()


# ------------------------------------------------------------------------------------------- batched fitting


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_batched_fit_files_round_trip_and_members_are_independent(quantizer: str) -> None:
    """Each member of a batch is a real, bit-exact file; a member ignores the other members' images and weights."""
    a, b = shapes_image(32, 32), smooth_image(32, 32)
    small = dataclasses.replace(SMALL, quantizer=quantizer)
    heavy = dataclasses.replace(small, rate_lambda=1e-2)
    first = fit_images([a, b], [small, heavy], steps=40, seed=0)
    second = fit_images([a, np.ascontiguousarray(b[::-1])], [small, small], steps=40, seed=0)
    for (name, p1), (_, p2) in zip(first[0].state_dict().items(), second[0].state_dict().items()):
        assert torch.equal(p1, p2), name
    assert encode_image_file(first[0]) == encode_image_file(second[0])
    assert not torch.equal(first[1].grid.latents.values, second[1].grid.latents.values)
    for field in first:
        data = encode_image_file(field)
        decoded = decode_image_file(data)
        assert torch.equal(decoded.grid.integer_latents(), field.grid.integer_latents())
        assert torch.equal(decoded.render(), field.render())


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_a_batch_member_is_its_solo_fit(quantizer: str) -> None:
    """What the batched benchmark relies on: a member of a batch (random pixels, another image and rate weight
    beside it) is ``fit_image`` of its image, config and seed, to the last bit of its file."""
    image = shapes_image(32, 32)
    cfg = dataclasses.replace(SMALL, batch_pixels=512, quantizer=quantizer)
    single = fit_image(image, cfg, steps=40, seed=1, progress=False)
    [batched, _] = fit_images(
        [image, smooth_image(32, 32)], [cfg, dataclasses.replace(cfg, rate_lambda=1e-2)], 40, seed=1
    )
    assert torch.equal(single.render(), batched.render())
    assert encode_image_file(single) == encode_image_file(batched)


def test_progress_estimate_is_the_fields_estimate() -> None:
    """fit_image's progress bar shows the field's own size estimate (a larger batch shows none: one entropy model
    spans its members)."""
    field = ImageField(SMALL, 16, 16).eval()
    assert BatchedImageFields([field]).estimate_bpp() == field.estimate_bits()["bpp"]
    assert BatchedImageFields([field, field]).estimate_bpp() is None


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_padded_members_train_like_unpadded_ones(quantizer: str) -> None:
    """Table size, latent dim and MLP width may differ in a batch: zero padding stays zero and changes nothing."""
    image = shapes_image(32, 32)
    small = dataclasses.replace(SMALL, quantizer=quantizer)
    configs = [
        dataclasses.replace(small, log2_hashmap_size=8, hidden_dim=8),
        dataclasses.replace(small, latent_dim=2, hidden_dim=24),
        small,
    ]
    batched = fit_images([image] * 3, configs, steps=12, seed=0)
    for config, field in zip(configs, batched):
        [alone] = fit_images([image], [config], steps=12, seed=0)
        assert field.grid.latents.values.shape == alone.grid.latents.values.shape
        assert torch.allclose(field.grid.latents.values, alone.grid.latents.values, atol=1e-4)
        assert torch.allclose(field.render(), alone.render(), atol=1e-3)
        assert decode_image_file(encode_image_file(field)).mlp[0].out_features == config.hidden_dim


@pytest.mark.parametrize(
    "flag,value,key,bad", [("--quantizer", "soft_round", "quantizer", "gumbel"),
                           ("--network-precision", "int8", "network_precision", "int4")],
)  # fmt: skip
def test_compress_flags_reach_the_field_config(flag: str, value: str, key: str, bad: str) -> None:
    """`shacira image compress --quantizer soft_round` / `--network-precision int8` reach the field config (the
    defaults are the config's); other names are refused."""
    import tyro

    parsed = tyro.cli(Compress, args=["in.png", "out.shac", flag, value])
    assert getattr(parsed.config(), key) == value
    assert getattr(tyro.cli(Compress, args=["in.png", "out.shac"]).config(), key) == getattr(ImageFieldConfig(), key)
    with pytest.raises(SystemExit) as excinfo:
        tyro.cli(Compress, args=["in.png", "out.shac", flag, bad])
    assert excinfo.value.code != 0


# ------------------------------------------------------------------------------- whole-image steps, file layout


def test_whole_image_corners_equal_the_gathered_ones() -> None:
    """Whole-image steps (one sparse matrix) give the features and gradients of the random-pixel path (cached
    corners) at every pixel."""
    field = ImageField(SMALL, 24, 40)
    x = pixel_centres(24, 40)
    gathered, whole = CornerCacheLookup(field.grid.geometry, x), MatrixLookup(field.grid.geometry, x)
    table = field.grid.lookup_latents().detach().requires_grad_()
    a, b = gathered(table), whole(table)
    assert torch.allclose(a, b, atol=1e-6)
    grads = [torch.autograd.grad(f.square().sum(), table)[0] for f in (a, b)]
    assert torch.allclose(grads[0], grads[1], atol=1e-5)
    with pytest.raises(ValueError, match="index"):
        whole(table, index=torch.tensor([0]))


def test_image_file_codes_one_stream_and_float16_networks(fitted: tuple) -> None:
    """The image file's latents are one coded stream and its networks float16 (exact: the fit rounded them)."""
    from shacira_nerf.codec import decode_container, unpack_array

    _, field = fitted
    header, sections = decode_container(encode_image_file(field))
    assert [n for n in sections if "/latents/" in n] == ["grid/latents/all"]
    for name, reference in field.network_tensors().items():
        arr = unpack_array(sections[f"network/{name}"])
        assert arr.dtype == np.float16 and np.array_equal(arr.astype(np.float32), reference.numpy()), name


def test_unrounded_networks_are_stored_as_float32_and_still_decode_exactly() -> None:
    """A field whose weights float16 cannot hold is stored in float32: decoding never changes what was measured."""
    field = ImageField(SMALL, 16, 16)  # fresh Xavier weights, not rounded
    field.eval()
    decoded = decode_image_file(encode_image_file(field))
    assert torch.equal(decoded.render(), field.render())
    from shacira_nerf.codec import decode_container, unpack_array

    _, sections = decode_container(encode_image_file(field))
    assert unpack_array(sections["network/mlp.0.weight"]).dtype == np.float32  # Xavier draws: not float16 values
    assert unpack_array(sections["network/mlp.0.bias"]).dtype == np.float16  # zeros are


def test_per_level_streams_still_decode() -> None:
    """Files whose grid was coded one stream per level (scene files; image files before the single stream)."""
    from shacira_nerf.bitstream import decode_grid, encode_grid

    field = ImageField(SMALL, 16, 16)
    sizes = field.grid.geometry.level_sizes
    expected = field.grid.integer_latents().numpy()
    for whole in (False, True):
        header, sections = encode_grid(field.grid, "g", whole_table=whole)
        assert np.array_equal(decode_grid(header, dict(sections), "g", sizes), expected)
    with pytest.raises(ContainerError, match="unknown latent stream layout"):
        decode_grid({**header, "latent_streams": "zigzag"}, dict(sections), "g", sizes)


def test_kodak_preset_and_overrides() -> None:
    """`--preset kodak` selects the benchmark's settings; explicit flags still win."""
    import tyro

    kodak = tyro.cli(Compress, args=["in.png", "out.shac", "--preset", "kodak"]).config()
    assert (kodak.num_levels, kodak.log2_hashmap_size, kodak.num_hidden_layers, kodak.max_res) == (24, 11, 1, 512)
    assert kodak.batch_pixels >= 768 * 512  # whole-image steps on Kodak
    custom = tyro.cli(Compress, args=["in.png", "out.shac", "--preset", "kodak", "--log2-entries", "12"]).config()
    assert custom.log2_hashmap_size == 12 and custom.num_levels == 24
    assert tyro.cli(Compress, args=["in.png", "out.shac"]).config().log2_hashmap_size == 15
