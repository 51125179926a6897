"""Kodak benchmark of image mode: SHACIRA vs JPEG (and WebP) in PSNR against bits per pixel, all from real files.

Run on a GPU (about 2000 steps x 24 images x the sweep), from the repository root::

    python benchmarks/image_kodak.py /data/kodak                       # lambda sweep at 2^15 entries
    python benchmarks/image_kodak.py /data/kodak --log2-entries 13 14 15 16 17 --lambdas 1e-4
    python benchmarks/image_kodak.py --sensitivity /data/uvg/jockey.png  # appendix sec. 3 curves
    python benchmarks/image_kodak.py /tmp/one_png_folder --quick       # CPU smoke check

For every image and setting it fits a field, writes the .shac bytes, decodes them and measures PSNR of the decoded
8-bit rendering and bpp = 8 x file bytes / pixels. JPEG (Pillow, quality sweep) and WebP (if Pillow has it) are
measured the same way, and their PSNR is interpolated (linearly in bpp) at each SHACIRA point's bpp. Every
measurement is appended as one JSON line (with date, machine and command) to ``<out-dir>/image_kodak.jsonl``; a
PSNR-vs-bpp plot and a table summarise the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, features

from shacira_nerf.image.cli import load_rgb_image
from shacira_nerf.image.field import ImageFieldConfig
from shacira_nerf.image.image_file import decode_image_file, encode_image_file
from shacira_nerf.image.train import fit_image, psnr, resolve_device, to_uint8

JPEG_QUALITIES = (1, 2, 3, 5, 8, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 95)
WEBP_QUALITIES = (0, 2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
DEFAULT_LAMBDAS = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2)
SENSITIVITY_LOG2 = (13, 14, 15, 16, 17)
SENSITIVITY_VARIANTS: Dict[str, Dict[str, int]] = {
    "latent1-width48": {"latent_dim": 1, "hidden_dim": 48},
    "latent2-width48": {"latent_dim": 2, "hidden_dim": 48},
    "latent1-width16": {"latent_dim": 1, "hidden_dim": 16},
    "latent1-width96": {"latent_dim": 1, "hidden_dim": 96},
}
"""Appendix sec. 3: latent dimension 1 vs 2 (Fig. 1) and MLP width 16/48/96 (Fig. 2); default width 48."""


def machine() -> Dict[str, str]:
    """Where the numbers came from."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"host": platform.node(), "cpu": platform.processor() or platform.machine(), "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version()}  # fmt: skip


def codec_curve(image: np.ndarray, fmt: str, qualities: Iterable[int]) -> List[Dict[str, float]]:
    """PSNR and bpp of ``image`` saved by Pillow as ``fmt`` at each quality (bytes of the real file)."""
    h, w = image.shape[:2]
    points = []
    for q in qualities:
        buf = io.BytesIO()
        options = {"quality": q, "optimize": True} if fmt == "JPEG" else {"quality": q, "method": 6}
        Image.fromarray(image).save(buf, format=fmt, **options)
        decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        points.append(
            {"quality": q, "bytes": buf.tell(), "bpp": 8.0 * buf.tell() / (h * w), "psnr": psnr(decoded, image)}
        )
    return points


def psnr_at_bpp(curve: Sequence[Dict[str, float]], bpp: float) -> Optional[float]:
    """The codec's PSNR at ``bpp``, linear between its two nearest points; None outside the measured range."""
    pts = sorted((p["bpp"], p["psnr"]) for p in curve)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if not xs or bpp < xs[0] or bpp > xs[-1]:
        return None
    return float(np.interp(bpp, xs, ys))


def run_shacira(image: np.ndarray, config: ImageFieldConfig, steps: int, device: torch.device, seed: int) -> Dict:
    """Fit, encode, decode: PSNR of the decoded file, bpp of its bytes, and the times."""
    h, w = image.shape[:2]
    start = time.time()
    field = fit_image(image, config, steps, device, seed, progress=False)
    fit_s = time.time() - start
    data = encode_image_file(field)
    decoded = decode_image_file(data, device)
    return {
        "psnr": psnr(to_uint8(decoded.render()), image),
        "bpp": 8.0 * len(data) / (h * w),
        "bytes": len(data),
        "estimated_bpp": field.estimate_bits()["bpp"],
        "num_latents": field.num_latents(),
        "network_floats": field.num_network_floats(),
        "fit_seconds": round(fit_s, 2),
    }


def sweep(args: argparse.Namespace) -> List[Tuple[str, ImageFieldConfig]]:
    """(label, config) of every SHACIRA point to measure per image."""
    lrs = {"lr_latents": args.lr_latents, "lr_entropy": args.lr_entropy}
    if args.sensitivity:
        log2s = (13, 15) if args.quick else SENSITIVITY_LOG2
        return [
            (f"{name} 2^{k}", ImageFieldConfig(log2_hashmap_size=k, rate_lambda=args.lambdas[0], **lrs, **variant))
            for name, variant in SENSITIVITY_VARIANTS.items()
            for k in log2s
        ]
    return [
        (f"lambda={lam:g} 2^{k}", ImageFieldConfig(rate_lambda=lam, log2_hashmap_size=k, **lrs))
        for k in args.log2_entries
        for lam in args.lambdas
    ]


def images_of(args: argparse.Namespace) -> List[Path]:
    if args.sensitivity:
        return [args.sensitivity]
    if args.folder is None:
        sys.exit("error: give a folder of Kodak PNGs (or --sensitivity IMAGE)")
    paths = sorted(p for p in args.folder.iterdir() if p.suffix.lower() == ".png")
    if not paths:
        sys.exit(f"error: no PNG files in {args.folder}")
    return paths[: args.limit] if args.limit else paths


def plot(records: List[Dict], path: Path, title: str) -> None:
    """PSNR vs bpp, averaged over images per setting (per quality for the classical codecs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for series, points in sorted(_mean_curves(records).items()):
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", markersize=3, label=series)
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


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, help="folder of Kodak PNGs (kodim01.png ... kodim24.png)")
    parser.add_argument("--sensitivity", type=Path, help="one image: the appendix's sensitivity curves instead")
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(DEFAULT_LAMBDAS))
    parser.add_argument("--log2-entries", type=int, nargs="+", default=[15])
    parser.add_argument("--steps", type=int, default=2000, help="training steps (the authors' Kodak runs use 60000)")
    parser.add_argument("--lr-latents", type=float, default=ImageFieldConfig.lr_latents)
    parser.add_argument("--lr-entropy", type=float, default=ImageFieldConfig.lr_entropy)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    parser.add_argument("--quick", action="store_true", help="CPU smoke check: 2 images, 150 steps, 2 settings")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = min(args.steps, 150)
        args.limit = args.limit or 2
        args.lambdas = args.lambdas[:1] if args.sensitivity else [args.lambdas[0], args.lambdas[-1]]
        args.log2_entries = args.log2_entries[:1]
    if args.sensitivity:
        args.lambdas = args.lambdas[:1]
    device = resolve_device(args.device)
    mode = "sensitivity" if args.sensitivity else "kodak"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = args.out_dir / "image_kodak.jsonl"
    plot_path = args.out_dir / ("image_kodak.png" if mode == "kodak" else "image_kodak_sensitivity.png")
    common = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["image_kodak.py", *argv]),
        "mode": mode,
        "steps": args.steps,
        "quick": args.quick,
    }
    jpeg_q = JPEG_QUALITIES[::3] if args.quick else JPEG_QUALITIES
    webp_q = (WEBP_QUALITIES[::3] if args.quick else WEBP_QUALITIES) if features.check("webp") else ()
    records: List[Dict] = []
    with jsonl.open("a") as out:

        def emit(record: Dict) -> None:
            records.append(record)
            out.write(json.dumps({**common, **record}) + "\n")
            out.flush()

        for path in images_of(args):
            image, notes = load_rgb_image(path)
            for note in notes:
                print(f"note: {path.name}: {note}", file=sys.stderr)
            curves = {"jpeg": codec_curve(image, "JPEG", jpeg_q)}
            if webp_q:
                curves["webp"] = codec_curve(image, "WEBP", webp_q)
            for method, curve in curves.items():
                for p in curve:
                    emit({"image": path.name, "method": method, "setting": f"q={p['quality']}", **p})
            for label, config in sweep(args):
                result = run_shacira(image, config, args.steps, device, args.seed)
                matched = {f"{m}_psnr_at_bpp": psnr_at_bpp(c, result["bpp"]) for m, c in curves.items()}
                series = label.split(" ")[0] if mode == "sensitivity" else f"2^{config.log2_hashmap_size}"
                emit({"image": path.name, "method": "shacira", "setting": label, "series": series,
                      "config": dataclasses.asdict(config), **result, **matched})  # fmt: skip
                shown = "  ".join(f"{k.split('_')[0]} {v:.2f}" for k, v in matched.items() if v is not None)
                print(f"{path.name:<14} {label:<26} PSNR {result['psnr']:6.2f} dB  {result['bpp']:.4f} bpp  "
                      f"({result['fit_seconds']:.0f} s)  at same bpp: {shown or '-'}", flush=True)  # fmt: skip
    plot(records, plot_path, f"image mode ({mode}), {len(images_of(args))} image(s), {args.steps} steps")
    print_table(records)
    print(f"appended {len(records)} records to {jsonl}; plot: {plot_path}")


def print_table(records: List[Dict]) -> None:
    """Mean over images per SHACIRA setting, with JPEG/WebP PSNR at the same bpp where measured."""
    rows: Dict[str, List[Dict]] = {}
    for r in records:
        if r["method"] == "shacira":
            rows.setdefault(r["setting"], []).append(r)
    print(f"\n{'setting':<28}{'images':>7}{'bpp':>9}{'PSNR':>8}{'JPEG@bpp':>10}{'WebP@bpp':>10}")
    for setting, rs in rows.items():

        def mean(key: str) -> str:
            values = [r[key] for r in rs if r.get(key) is not None]
            return f"{np.mean(values):.2f}" if len(values) == len(rs) else "-"

        bpp = np.mean([r["bpp"] for r in rs])
        psnr_ = np.mean([r["psnr"] for r in rs])
        print(
            f"{setting:<28}{len(rs):>7}{bpp:>9.4f}{psnr_:>8.2f}{mean('jpeg_psnr_at_bpp'):>10}{mean('webp_psnr_at_bpp'):>10}"
        )


if __name__ == "__main__":
    main()
