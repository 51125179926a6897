"""Kodak benchmark of image mode: SHACIRA vs JPEG, WebP and JPEG2000 in PSNR against bits per pixel, from real files.

Run on a GPU from the repository root (``benchmarks/gpu/kodak.sh`` is the exact call, about 8 minutes on an H200)::

    python benchmarks/image_kodak.py /data/kodak                          # lambda sweep, authors' Kodak preset
    python benchmarks/image_kodak.py /data/kodak --log2-entries 10 11 12 --lambdas 1e-4
    python benchmarks/image_kodak.py --sensitivity /data/kodak/kodim23.png  # appendix sec. 3 curves
    python benchmarks/image_kodak.py /data/kodak --sensitivity /data/kodak/kodim23.png   # both, one process
    python benchmarks/image_kodak.py /tmp/one_png_folder --quick          # CPU smoke check

Images of one shape are fitted together (``shacira_nerf.image.train.fit_images``, the one trainer): every image x
every rate weight of one table size is one member of one batch, with its own parameters, so 24 Kodak images x 4
weights take two batches (landscape and portrait) instead of 96 runs. ``--no-batch`` fits them one by one with
``fit_image`` (a batch of one: on CPU the same files).

For every member the benchmark writes the .shac bytes (``encode_image_file``), decodes them, and measures PSNR of the
decoded 8-bit rendering and bpp = 8 x file bytes / pixels. JPEG (Pillow, quality sweep), WebP (if Pillow has it) and
JPEG2000 (if Pillow has OpenJPEG: a sweep of target bit rates, ``JPEG2000_BPPS``, as a bare .j2k codestream with the
lossy 9/7 wavelet and the RGB -> YCbCr colour transform) are measured the same way (in worker processes, while the GPU
fits), and their PSNR is interpolated (linearly in bpp) at each SHACIRA point's bpp. Every measurement is appended as
one JSON line (with date, machine and command) to ``<out-dir>/image_kodak.jsonl`` as soon as it exists; PSNR-vs-bpp
plots and a table summarise the run (``benchmarks/kodak_replot.py`` adds missing codec curves to an old results file).

The default preset follows the authors' public Kodak config (github.com/Sharath-girish/Shacira,
app/image/configs/kodak.yaml), which differs from the appendix's text: 24 levels, 2^11 entries, grid resolution
16..512, one hidden layer of width 16, latent learning rate 0.02, rate weight decaying (cosine) from 10x to 1x
lambda, 60000 full-image steps. We cannot afford 60000 steps; the learning rates decay at the end instead.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import io
import json
import multiprocessing
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, features

from shacira_nerf.core.quantizer import QUANTIZER_MODES
from shacira_nerf.image.field import KODAK_PRESET, ImageField, ImageFieldConfig
from shacira_nerf.image.image_file import decode_image_file, encode_image_file
from shacira_nerf.image.train import fit_image, fit_images, psnr, resolve_device, to_uint8

JPEG_QUALITIES = (1, 2, 3, 5, 8, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 95)
WEBP_QUALITIES = (0, 2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
JPEG2000_BPPS = (0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
"""JPEG2000 target bit rates (bpp): OpenJPEG gets them as compression ratios against 24-bit RGB (``24 / bpp``); the
measured bpp are those of the real bytes (on Kodak OpenJPEG 2.5 lands 0.5 % under the target on average, 4 % at
most)."""
DEFAULT_LAMBDAS = (3e-5, 1e-4, 3e-4, 1e-3)
SENSITIVITY_LOG2 = (13, 14, 15, 16, 17)
SENSITIVITY_VARIANTS: Dict[str, Dict[str, int]] = {
    "latent1-width48": {"latent_dim": 1, "hidden_dim": 48},
    "latent2-width48": {"latent_dim": 2, "hidden_dim": 48},
    "latent1-width16": {"latent_dim": 1, "hidden_dim": 16},
    "latent1-width96": {"latent_dim": 1, "hidden_dim": 96},
}
"""Appendix sec. 3: latent dimension 1 vs 2 (Fig. 1) and MLP width 16/48/96 (Fig. 2); default width 48, depth 2."""


def machine() -> Dict[str, Optional[str]]:
    """Where the numbers came from."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"host": platform.node(), "cpu": platform.processor() or platform.machine(), "gpu": gpu,
            "cores": str(os.cpu_count()), "torch": torch.__version__, "python": platform.python_version()}  # fmt: skip


def load_rgb(path: Path, downscale: int = 1) -> np.ndarray:
    """An 8-bit RGB image as uint8 HxWx3 (Kodak PNGs are plain RGB); ``downscale`` > 1 shrinks it (box filter)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if downscale > 1:
            im = im.resize((im.width // downscale, im.height // downscale), Image.Resampling.BOX)
        return np.ascontiguousarray(np.asarray(im), dtype=np.uint8)


def save_options(fmt: str, q: float) -> Dict:
    """Pillow's save options for ``fmt`` at quality (JPEG, WebP) or target bit rate in bpp (JPEG2000) ``q``."""
    if fmt == "JPEG":
        return {"quality": q, "optimize": True}
    if fmt == "WEBP":
        return {"quality": q, "method": 6}
    if fmt == "JPEG2000":
        # One quality layer at compression ratio 24 / bpp (OpenJPEG's ratio is against the raw 3 x 8-bit samples),
        # irreversible 9/7 wavelet, colour transform on (Pillow's default is off, OpenJPEG's opj_compress turns it on
        # for RGB; off costs 2-10 dB on Kodak), a bare codestream (no JP2 boxes).
        return {"quality_mode": "rates", "quality_layers": [24.0 / q], "irreversible": True, "mct": 1, "no_jp2": True}
    raise ValueError(f"no save options for {fmt!r}")


def codec_curve(image: np.ndarray, fmt: str, qualities: Iterable[float]) -> List[Dict[str, float]]:
    """PSNR and bpp of ``image`` saved by Pillow as ``fmt`` at each quality (bytes of the real file); for JPEG2000 the
    "qualities" are target bit rates in bpp (the points' ``target_bpp``)."""
    h, w = image.shape[:2]
    points = []
    for q in qualities:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format=fmt, **save_options(fmt, q))
        data = buf.getvalue()
        if fmt == "JPEG2000" and data[:4] != b"\xff\x4f\xff\x51":  # SOC and SIZ markers of a .j2k codestream
            raise RuntimeError(f"JPEG2000 at {q} bpp: not a bare codestream (starts {data[:4].hex()})")
        decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        if decoded.shape != image.shape:
            raise RuntimeError(f"{fmt} at {q}: decoded {decoded.shape}, expected {image.shape}")
        point = {"target_bpp": q, "mct": 1} if fmt == "JPEG2000" else {"quality": q}
        points.append({**point, "bytes": len(data), "bpp": 8.0 * len(data) / (h * w), "psnr": psnr(decoded, image)})
    return points


def codec_setting(point: Dict) -> str:
    """The ``setting`` of a codec point's record: ``q=50`` (JPEG, WebP) or ``rate=0.25`` (JPEG2000, target bpp)."""
    return f"rate={point['target_bpp']:g}" if "target_bpp" in point else f"q={point['quality']}"


def interpolate(points: Sequence[Tuple[float, float]], x: float) -> Optional[float]:
    """y at ``x`` on the curve through ``points`` (any order), linear between the two that bracket it; else None."""
    pts = sorted(points)
    if not pts or x < pts[0][0] or x > pts[-1][0]:
        return None
    return float(np.interp(x, [p[0] for p in pts], [p[1] for p in pts]))


def psnr_at_bpp(curve: Sequence[Dict[str, float]], bpp: float) -> Optional[float]:
    """The codec's PSNR at ``bpp``, linear between its two nearest points; None outside the measured range."""
    return interpolate([(p["bpp"], p["psnr"]) for p in curve], bpp)


CODECS: Dict[str, Tuple[str, Tuple[float, ...], Optional[str]]] = {
    "jpeg": ("JPEG", JPEG_QUALITIES, None),
    "webp": ("WEBP", WEBP_QUALITIES, "webp"),
    "jpeg2000": ("JPEG2000", JPEG2000_BPPS, "jpg_2000"),
}
"""Record method -> (Pillow format, sweep, Pillow feature it needs or None)."""


def available_codecs() -> List[str]:
    """The methods of ``CODECS`` this Pillow can write."""
    return [name for name, (_, _, feature) in CODECS.items() if feature is None or features.check(feature)]


def codec_curves(
    image: np.ndarray, quick: bool, only: Optional[Iterable[str]] = None
) -> Dict[str, List[Dict[str, float]]]:
    """JPEG and (if Pillow has them) WebP and JPEG2000 curves of one image, or only the methods in ``only`` that are
    available (run in a worker process); ``quick`` takes every third sweep value."""
    wanted = available_codecs() if only is None else [m for m in available_codecs() if m in set(only)]
    out = {}
    for method in wanted:
        fmt, sweep, _ = CODECS[method]
        out[method] = codec_curve(image, fmt, sweep[::3] if quick else sweep)
    return out


def training_settings(args: argparse.Namespace) -> Dict:
    """The command line's optimisation settings, shared by the Kodak preset and the sensitivity runs."""
    return {
        "lr_latents": args.lr_latents,
        "lr_entropy": args.lr_entropy,
        "lr_decay_start": args.lr_decay_start,
        "anneal_fraction": args.anneal_fraction,
        "quantizer": args.quantizer,
        "lr_final_factor": args.lr_final_factor,
        "batch_pixels": args.batch_pixels,
        "implementation": "torch",
    }


def base_config(args: argparse.Namespace) -> ImageFieldConfig:
    """The Kodak preset (``KODAK_PRESET``, the flags' defaults) from the command line (rate weight and table size are
    set per point)."""
    return ImageFieldConfig(
        num_levels=args.levels,
        max_res=args.max_res,
        hidden_dim=args.hidden_dim,
        num_hidden_layers=args.hidden_layers,
        rate_lambda_start_factor=args.lambda_start_factor,
        **training_settings(args),
    )


def sensitivity_config(args: argparse.Namespace) -> ImageFieldConfig:
    """Appendix sec. 3 defaults: 16 levels, latent/feature dim 1, width 48, depth 2, lambda 1e-4, annealing 0.95."""
    return ImageFieldConfig(
        rate_lambda=args.sensitivity_lambda, hidden_dim=48, num_hidden_layers=2, **training_settings(args)
    )


def measure(field: ImageField, image: np.ndarray, device: torch.device) -> Dict:
    """Encode, decode, render: PSNR of the decoded file, bpp of its bytes."""
    h, w = image.shape[:2]
    data = encode_image_file(field)
    decoded = decode_image_file(data, device)
    return {
        "psnr": psnr(to_uint8(decoded.render()), image),
        "bpp": 8.0 * len(data) / (h * w),
        "bytes": len(data),
        "estimated_bpp": field.estimate_bits()["bpp"],
        "num_latents": field.num_latents(),
        "network_floats": field.num_network_floats(),
    }


@dataclasses.dataclass
class Member:
    """One SHACIRA point to measure: an image with a config."""

    name: str
    image: np.ndarray
    config: ImageFieldConfig
    label: str
    series: str


def fit_members(members: List[Member], args: argparse.Namespace, device: torch.device, tag: str) -> List[ImageField]:
    """Fit all members (batched by image shape, or one by one with --no-batch), printing progress lines."""
    if not args.batch:
        out = []
        for m in members:
            start = time.time()
            out.append(fit_image(m.image, m.config, args.steps_now, device, args.seed, progress=False))
            print(f"[{tag}] {m.name} {m.label}: fitted in {time.time() - start:.1f} s", flush=True)
        return out
    start = time.time()

    def progress(step: int, mse: torch.Tensor) -> None:
        mean = float((-10.0 * torch.log10(mse.clamp_min(1e-12))).mean())
        print(f"[{tag}] step {step + 1}/{args.steps_now}  mean batch PSNR {mean:.2f} dB  {time.time() - start:.1f} s",
              flush=True)  # fmt: skip

    fields = fit_images([m.image for m in members], [m.config for m in members], args.steps_now, device, args.seed,
                        log_every=args.log_every, callback=progress)  # fmt: skip
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(f"[{tag}] {len(members)} members fitted in {time.time() - start:.1f} s", flush=True)
    return fields


PROBE_STEPS = (10, 40)
"""A time-budgeted run times each group's steps between these two (the first steps warm up kernels and caches)."""


def probe_seconds_per_step(groups: List[List[Member]], device: torch.device, seed: int) -> List[float]:
    """Seconds per training step of each group, from a short throw-away fit of the whole group."""
    out = []
    for group in groups:
        marks: Dict[int, float] = {}

        def mark(step: int, mse: torch.Tensor) -> None:
            float(mse[0])  # waits for the GPU
            marks[step] = time.time()

        first, last = PROBE_STEPS
        fit_images([m.image for m in group], [dataclasses.replace(m.config, entropy_refit_steps=0) for m in group],
                   last + 1, device, seed, log_every=1,
                   callback=lambda step, mse: mark(step, mse) if step in (first, last) else None)  # fmt: skip
        out.append((marks[last] - marks[first]) / (last - first))
    return out


def steps_for_budget(groups: List[List[Member]], budget_s: float, args, device, tag: str) -> Tuple[int, List[float]]:  # noqa: ANN001
    """The step count (a multiple of 100, at least 100) that fits every group's fit into ``budget_s`` seconds."""
    per_step = probe_seconds_per_step(groups, device, args.seed)
    steps = max(100, int(budget_s / sum(per_step)) // 100 * 100)
    sizes = ", ".join(f"{len(g)} members {1000 * t:.1f} ms" for g, t in zip(groups, per_step))
    print(f"[{tag}] probe: {sizes} per step -> {steps} steps for {budget_s:.0f} s", flush=True)
    return steps, per_step


def run_group(members: List[Member], args, device, tag, curves_of, emit) -> None:  # noqa: ANN001
    """Fit one group, then measure and record every member as it is written and decoded."""
    start = time.time()
    fields = fit_members(members, args, device, tag)
    fit_s = time.time() - start
    for m, field in zip(members, fields):
        result = measure(field, m.image, device)
        curves = curves_of(m.name)
        matched = {f"{k}_psnr_at_bpp": psnr_at_bpp(c, result["bpp"]) for k, c in curves.items()}
        emit({"image": m.name, "method": "shacira", "setting": m.label, "series": m.series,
              "config": dataclasses.asdict(m.config), "steps": args.steps_now, "batched": args.batch,
              "steps_from_time_budget": args.budget_now, "probe_ms_per_step": args.probe_ms_now,
              "group_members": len(members), "group_fit_seconds": round(fit_s, 2), **result, **matched})  # fmt: skip
        shown = "  ".join(f"{k.split('_')[0]} {v:.2f}" for k, v in matched.items() if v is not None)
        print(f"{m.name:<14} {m.label:<28} PSNR {result['psnr']:6.2f} dB  {result['bpp']:.4f} bpp  "
              f"at same bpp: {shown or '-'}", flush=True)  # fmt: skip


def by_shape(members: List[Member], max_batch: int) -> List[List[Member]]:
    """Members grouped by image shape (a batch needs one shape) and table size (members of one grid geometry share
    one sparse lookup matrix on whole-image steps), split into chunks of at most ``max_batch``."""
    groups: Dict[Tuple[int, ...], List[Member]] = {}
    for m in members:
        groups.setdefault((*m.image.shape, m.config.log2_hashmap_size), []).append(m)
    out = []
    for group in groups.values():
        size = max_batch or len(group)
        out.extend(group[i : i + size] for i in range(0, len(group), size))
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, help="folder of Kodak PNGs (kodim01.png ... kodim24.png)")
    parser.add_argument("--sensitivity", type=Path, help="one image: the appendix's sensitivity curves (too)")
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(DEFAULT_LAMBDAS), help="final rate weights")
    parser.add_argument("--log2-entries", type=int, nargs="+", default=[KODAK_PRESET["log2_hashmap_size"]])
    parser.add_argument("--steps", type=int, default=6000, help="Kodak steps (the authors' Kodak runs use 60000)")
    parser.add_argument("--sensitivity-steps", type=int, default=3000)
    parser.add_argument("--time-budget", type=float, default=0,
                        help="seconds for all Kodak fits: the step count comes from a short timed probe of each batch "
                        "(recorded with the results); overrides --steps")  # fmt: skip
    parser.add_argument("--sensitivity-time-budget", type=float, default=0,
                        help="the same for the sensitivity fits; overrides --sensitivity-steps")  # fmt: skip
    parser.add_argument("--sensitivity-lambda", type=float, default=1e-4)
    parser.add_argument("--levels", type=int, default=KODAK_PRESET["num_levels"])
    parser.add_argument(
        "--max-res",
        type=int,
        default=KODAK_PRESET["max_res"],
        help="finest grid resolution (0: the image's longer side)",
    )
    parser.add_argument("--hidden-dim", type=int, default=KODAK_PRESET["hidden_dim"])
    parser.add_argument("--hidden-layers", type=int, default=KODAK_PRESET["num_hidden_layers"])
    parser.add_argument("--lr-latents", type=float, default=KODAK_PRESET["lr_latents"])
    parser.add_argument("--lr-entropy", type=float, default=KODAK_PRESET["lr_entropy"])
    parser.add_argument("--lambda-start-factor", type=float, default=KODAK_PRESET["rate_lambda_start_factor"])
    parser.add_argument("--lr-decay-start", type=float, default=KODAK_PRESET["lr_decay_start"])
    parser.add_argument(
        "--anneal-fraction",
        type=float,
        default=ImageFieldConfig.anneal_fraction,
        help="fraction of training with soft rounding or SGA (then straight-through rounding); the authors' SGA: 0.9",
    )
    parser.add_argument(
        "--quantizer",
        choices=QUANTIZER_MODES,
        default=ImageFieldConfig.quantizer,
        help="rounding stand-in while annealing: A&T soft rounding or stochastic Gumbel annealing (authors' Kodak)",
    )
    parser.add_argument("--lr-final-factor", type=float, default=KODAK_PRESET["lr_final_factor"])
    parser.add_argument("--batch-pixels", type=int, default=KODAK_PRESET["batch_pixels"],
                        help="random pixels per image and step; at least the image's pixels (the default, as the "
                        "authors train): whole-image steps through one sparse lookup matrix per batch")  # fmt: skip
    parser.add_argument("--batch", action=argparse.BooleanOptionalAction, default=True,
                        help="fit images of one shape together (default); --no-batch: one by one")  # fmt: skip
    parser.add_argument("--max-batch", type=int, default=0, help="at most this many members per batch (0: no limit)")
    parser.add_argument("--downscale", type=int, default=1, help="shrink every image by this factor (CPU checks)")
    parser.add_argument("--log-every", type=int, default=500, help="progress line every N steps")
    parser.add_argument("--codec-workers", type=int, default=8, help="processes for the JPEG/WebP/JPEG2000 curves")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    parser.add_argument("--quick", action="store_true", help="CPU smoke check: 2 images, 150 steps, 2 settings")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if args.folder is None and args.sensitivity is None:
        sys.exit("error: give a folder of Kodak PNGs and/or --sensitivity IMAGE")
    if args.quick:
        args.steps = min(args.steps, 150)
        args.sensitivity_steps = min(args.sensitivity_steps, 150)
        args.time_budget = args.sensitivity_time_budget = 0
        args.limit = args.limit or 2
        args.lambdas = [args.lambdas[0], args.lambdas[-1]]
        args.log2_entries = args.log2_entries[:1]
    paths: List[Path] = []
    if args.folder is not None:
        paths = sorted(p for p in args.folder.iterdir() if p.suffix.lower() == ".png")
        if not paths:
            sys.exit(f"error: no PNG files in {args.folder}")
        paths = paths[: args.limit] if args.limit else paths
    images = {p.name: load_rgb(p, args.downscale) for p in paths}
    sens_name = None
    if args.sensitivity is not None:
        sens_name = f"sens:{args.sensitivity.name}"
        images[sens_name] = load_rgb(args.sensitivity, args.downscale)
    # Worker processes are forked before CUDA starts (forking a CUDA process is unsafe); they run while we fit.
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=max(1, min(args.codec_workers, len(images))), mp_context=multiprocessing.get_context("fork")
    )
    futures = {name: pool.submit(codec_curves, image, args.quick) for name, image in images.items()}
    device = resolve_device(args.device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = args.out_dir / "image_kodak.jsonl"
    common = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["image_kodak.py", *argv]),
        "quick": args.quick,
        "downscale": args.downscale,
    }
    records: List[Dict] = []
    emitted_codecs: set = set()
    with jsonl.open("a") as out:

        def emit(record: Dict) -> None:
            records.append(record)
            out.write(json.dumps({**common, **record}) + "\n")
            out.flush()

        def curves_of(name: str) -> Dict[str, List[Dict[str, float]]]:
            curves = futures[name].result()
            if name not in emitted_codecs:
                emitted_codecs.add(name)
                for method, curve in curves.items():
                    for p in curve:
                        emit({"mode": "sensitivity" if name == sens_name else "kodak", "image": name,
                              "method": method, "setting": codec_setting(p), **p})  # fmt: skip
            return curves

        t0 = time.time()
        if paths:
            base = base_config(args)
            members = [
                Member(
                    p.name,
                    images[p.name],
                    dataclasses.replace(base, log2_hashmap_size=k, rate_lambda=lam),
                    f"lambda={lam:g} 2^{k}",
                    f"2^{k}",
                )  # fmt: skip
                for k in args.log2_entries
                for p in paths
                for lam in args.lambdas
            ]
            groups = by_shape(members, args.max_batch)
            args.steps_now, args.budget_now, args.probe_ms_now = args.steps, None, None
            if args.time_budget:
                args.steps_now, per_step = steps_for_budget(groups, args.time_budget, args, device, "kodak")
                args.budget_now = args.time_budget
            for i, group in enumerate(groups):
                if args.time_budget:
                    args.probe_ms_now = round(1000 * per_step[i], 2)
                shape = "x".join(map(str, group[0].image.shape[:2]))
                k = group[0].config.log2_hashmap_size
                run_group(group, args, device, f"kodak 2^{k} {shape}", curves_of,
                          lambda r: emit({"mode": "kodak", **r}))  # fmt: skip
            kodak = [r for r in records if r.get("mode") == "kodak"]
            for name in images:
                if name != sens_name:
                    curves_of(name)
            plot(kodak, args.out_dir / "image_kodak.png",
                 f"Kodak ({len(paths)} images), {args.steps_now} whole-image steps, mean over images")  # fmt: skip
            print_table(kodak)
            print(f"kodak done after {time.time() - t0:.0f} s", flush=True)
        if sens_name is not None:
            base = sensitivity_config(args)
            log2s = (13, 15) if args.quick else SENSITIVITY_LOG2
            members = [
                Member(
                    sens_name,
                    images[sens_name],
                    dataclasses.replace(base, log2_hashmap_size=k, **variant),
                    f"{name} 2^{k}",
                    name,
                )  # fmt: skip
                for name, variant in SENSITIVITY_VARIANTS.items()
                for k in log2s
            ]
            groups = by_shape(members, args.max_batch)
            args.steps_now, args.budget_now, args.probe_ms_now = args.sensitivity_steps, None, None
            if args.sensitivity_time_budget:
                args.steps_now, per_step = steps_for_budget(
                    groups, args.sensitivity_time_budget, args, device, "sensitivity"
                )
                args.budget_now = args.sensitivity_time_budget
            for i, group in enumerate(groups):
                if args.sensitivity_time_budget:
                    args.probe_ms_now = round(1000 * per_step[i], 2)
                run_group(group, args, device, f"sensitivity 2^{group[0].config.log2_hashmap_size}", curves_of,
                          lambda r: emit({"mode": "sensitivity", **r}))  # fmt: skip
            sens = [r for r in records if r.get("mode") == "sensitivity"]
            plot(sens, args.out_dir / "image_kodak_sensitivity.png",
                 f"sensitivity on {args.sensitivity.name}, {args.steps_now} steps")  # fmt: skip
            print_table(sens)
            print(f"sensitivity done after {time.time() - t0:.0f} s", flush=True)
    pool.shutdown()
    print(f"appended {len(records)} records to {jsonl}")


def plot(records: List[Dict], path: Path, title: str) -> None:
    """PSNR vs bpp, averaged over images per setting (per quality for the classical codecs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    curves = sorted(_mean_curves(records).items())
    ours = [x for series, points in curves if series.startswith("shacira") for x, _ in points]
    right = 1.6 * max(ours) if ours else None  # the classical codecs' curves run to 3+ bpp: show where we are
    for series, points in curves:
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", markersize=3, label=series)
    if right is not None:
        shown = [y for _, points in curves for x, y in points if x <= right]
        ax.set_xlim(0, right)
        ax.set_ylim(min(shown) - 0.5, max(shown) + 0.5)
    ax.set_xlabel("bits per pixel (file bytes x 8 / pixels)")
    ax.set_ylabel("PSNR (dB, 8-bit RGB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _mean_curves(records: List[Dict]) -> Dict[str, List[Tuple[float, float]]]:
    groups: Dict[Tuple[str, str], List[Dict]] = {}
    for r in records:
        series = r["method"] if r["method"] != "shacira" else f"shacira {r.get('series', '')}".strip()
        groups.setdefault((series, str(r["setting"])), []).append(r)
    curves: Dict[str, List[Tuple[float, float]]] = {}
    for (series, _), rs in groups.items():
        curves.setdefault(series, []).append(
            (float(np.mean([r["bpp"] for r in rs])), float(np.mean([r["psnr"] for r in rs])))
        )
    return curves


def print_table(records: List[Dict]) -> None:
    """Mean over images per SHACIRA setting, with JPEG/WebP/JPEG2000 PSNR at the same bpp where measured ("-" where
    some image's point lies outside the codec's measured range or the codec was not measured)."""
    rows: Dict[str, List[Dict]] = {}
    for r in records:
        if r["method"] == "shacira":
            rows.setdefault(r["setting"], []).append(r)
    print(f"\n{'setting':<28}{'images':>7}{'bpp':>9}{'PSNR':>8}{'JPEG@bpp':>10}{'WebP@bpp':>10}{'J2K@bpp':>10}")
    for setting, rs in rows.items():

        def mean(key: str) -> str:
            values = [r[key] for r in rs if r.get(key) is not None]
            return f"{np.mean(values):.2f}" if len(values) == len(rs) else "-"

        bpp = np.mean([r["bpp"] for r in rs])
        psnr_ = np.mean([r["psnr"] for r in rs])
        at = "".join(f"{mean(f'{m}_psnr_at_bpp'):>10}" for m in ("jpeg", "webp", "jpeg2000"))
        print(f"{setting:<28}{len(rs):>7}{bpp:>9.4f}{psnr_:>8.2f}{at}")


if __name__ == "__main__":
    main()
