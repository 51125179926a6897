"""Re-plot a Kodak results file with the codec curves it lacks (JPEG2000) and the published anchors, on a CPU.

    python benchmarks/kodak_replot.py                       # H200 results, data/real/kodak, 2 worker processes
    python benchmarks/kodak_replot.py --results run.jsonl --kodak /data/kodak --workers 8

Reads a results file of ``benchmarks/image_kodak.py`` (one JSON record a line) and the Kodak PNGs. For every image of
the ``kodak`` mode records it measures, in ``--workers`` processes, the curves of the codecs this Pillow can write
(``image_kodak.available_codecs``) that the file holds no record of for that image (for the H200 file: JPEG2000), with
``image_kodak.codec_curves``: the same real-bytes measurement as the GPU benchmark. The ``sensitivity`` mode records
are left alone.

Writes (each atomically: a temporary file in the same folder, then ``os.replace``):

* ``--out`` (JSONL): one record per newly measured codec point (``mode`` "kodak", ``image``, ``method``, ``setting``,
  ``bytes``, ``bpp``, ``psnr``, with ``date``, ``machine`` and ``command`` of this run), then a copy of every kodak-mode
  SHACIRA record of the input (its own date, machine and command unchanged) with ``<codec>_psnr_at_bpp`` added for each
  new codec and an ``added_by`` entry naming this run and the keys it added. The input plus this file hold everything.
* ``--plot`` (PNG): the mean-over-images curves (per SHACIRA series, per codec setting) with ``PUBLISHED_ANCHORS`` as
  gray stars, x from 0 to 1.6 x the largest SHACIRA mean bpp (at least past 0.266 bpp, the anchors' rate).
* stdout: ``image_kodak.print_table`` of the SHACIRA settings (mean bpp, PSNR, and each codec's PSNR interpolated at
  the same bpp per image, then averaged; "-" where an image lies outside a codec's range), and one line comparing, at
  0.266 bpp, the mean SHACIRA curve and our mean JPEG2000 curve (each linear in bpp between the two mean points that
  bracket 0.266) with the published anchors at their own rates.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, NoReturn, Optional, Sequence, Tuple

import PIL
from PIL import features

sys.path.insert(0, str(Path(__file__).resolve().parent))
import image_kodak  # noqa: E402
from common import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ANCHOR_BPP = 0.266


class Anchor(NamedTuple):
    """One published rate-distortion point on Kodak: mean bpp and mean (per-image) PSNR over the 24 images."""

    name: str
    bpp: float
    psnr: float
    source: str


PUBLISHED_ANCHORS: Tuple[Anchor, ...] = (
    Anchor("COIN++", 0.266, 26.14, "Dupont et al. 2022, coinpp results/kodak/coinpp.json"),
    Anchor("JPEG2000 (published)", 0.266, 28.77, "CompressAI results/image/kodak/jpeg2000.json (ffmpeg 3.4.6)"),
    Anchor("Strümpler et al. 2022", 0.249, 28.28, "Strümpler et al., ECCV 2022, numbers from the authors"),
    Anchor("COOL-CHIC v1", 0.246, 29.22, "Ladune et al. 2023, Cool-Chic results/kodak"),
    Anchor("BPG 4:4:4", 0.265, 30.52, "BPG 4:4:4 run by the C3 authors"),
    Anchor("C3", 0.232, 30.59, "Kim et al. 2024, arXiv 2312.02753"),
)
"""Published Kodak points near 0.25 bpp, from google-deepmind/c3_neural_compression, ``baselines/kodak.py``: of its
``RESULTS`` entries COIN++, JPEG2000, SPY (Strümpler et al.), COOL-CHIC, BPG444 and C3 the point the issue quotes,
rounded to 3 decimals of bpp and 2 of dB (checked against that file at commit ce70560e). Their PSNR is per image, then
averaged, and their bpp averaged, like our mean curves."""


def fail(path: Path, why: str) -> NoReturn:
    """The one-line error for a bad input, exit status 2."""
    print(f"error: {path}: {why}", file=sys.stderr)
    sys.exit(2)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def read_results(path: Path) -> List[Dict]:
    """The records of a results JSONL file (blank lines skipped); a bad line is a one-line error."""
    if not path.is_file():
        fail(path, "no such file" if not path.exists() else "not a file")
    records = []
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                fail(path, f"line {number}: not JSON ({e.msg})")
            if not isinstance(record, dict) or not {"method", "image", "bpp", "psnr"} <= record.keys():
                fail(path, f"line {number}: not a benchmark record (needs method, image, bpp, psnr)")
            records.append(record)
    return records


def measure_image(path: Path, methods: Sequence[str]) -> Dict[str, List[Dict[str, float]]]:
    """The curves of ``methods`` for one Kodak PNG (in a worker process)."""
    return image_kodak.codec_curves(image_kodak.load_rgb(path), quick=False, only=methods)


def machine() -> Dict[str, Optional[str]]:
    """``image_kodak.machine()`` plus the CPU model and the codec libraries."""
    return {**image_kodak.machine(), "cpu_model": cpu_model(), "pillow": PIL.__version__,
            "openjpeg": features.version("jpg_2000"), "libjpeg": features.version("jpg"),
            "libwebp": features.version("webp")}  # fmt: skip


def write_atomically(path: Path, write) -> None:  # noqa: ANN001
    """Call ``write(temporary path)``, then move the temporary file onto ``path`` (same folder, so one rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; the result gets a plain file's mode
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


CODEC_NAMES = {"jpeg": "JPEG", "webp": "WebP", "jpeg2000": "JPEG2000"}


def series_name(series: str, measured_here: Sequence[str] = ()) -> str:
    """A legend label: SHACIRA series as they are, codecs with where their curve was measured."""
    if series.startswith("shacira"):
        return series
    where = f"measured here, OpenJPEG {features.version('jpg_2000')}" if series == "jpeg2000" else "measured here"
    return f"{CODEC_NAMES.get(series, series)} ({where if series in measured_here else 'from the results file'})"


def plot(records: List[Dict], path: Path, title: str, measured_here: Sequence[str] = ()) -> None:
    """Mean curves per series and the published anchors (gray stars with labels), focused on SHACIRA's bpp."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = sorted(image_kodak._mean_curves(records).items())
    ours = [x for series, points in curves if series.startswith("shacira") for x, _ in points]
    right = max(1.6 * max(ours) if ours else 0.0, 1.15 * max(a.bpp for a in PUBLISHED_ANCHORS))
    fig, ax = plt.subplots(figsize=(8, 5.5))
    shown = [a.psnr for a in PUBLISHED_ANCHORS]
    for series, points in curves:
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", markersize=3, label=series_name(series, measured_here))
        shown += [y for x, y in points if x <= right]
    for a in PUBLISHED_ANCHORS:
        ax.plot([a.bpp], [a.psnr], marker="*", markersize=11, color="0.45", linestyle="none", zorder=5)
        ax.annotate(a.name, (a.bpp, a.psnr), xytext=(7, -3), textcoords="offset points", fontsize=7, color="0.25",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})  # fmt: skip
    ax.plot([], [], marker="*", markersize=9, color="0.45", linestyle="none", label="published (C3 baselines)")
    ax.axvline(ANCHOR_BPP, color="0.8", linewidth=0.8, zorder=0)
    ax.set_xlim(0, right)
    ax.set_ylim(min(shown) - 0.5, max(shown) + 0.5)
    ax.set_xlabel("bits per pixel (file bytes x 8 / pixels)")
    ax.set_ylabel("PSNR (dB, 8-bit RGB, mean over images)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def anchor_line(records: List[Dict]) -> str:
    """SHACIRA's and our codecs' mean curves at 0.266 bpp vs the published anchors at their rates."""
    curves = image_kodak._mean_curves(records)
    parts = []
    for series in sorted(curves, key=lambda s: (not s.startswith("shacira"), s)):
        if series.startswith("shacira") or series == "jpeg2000":
            value = image_kodak.interpolate(curves[series], ANCHOR_BPP)
            label = "JPEG2000 (ours)" if series == "jpeg2000" else series
            parts.append(f"{label} {value:.2f} dB" if value is not None else f"{label} - (out of range)")
    published = ", ".join(f"{a.name} {a.psnr:.2f} @ {a.bpp:.3f}" for a in PUBLISHED_ANCHORS)
    return f"at {ANCHOR_BPP} bpp (mean curves, linear in bpp): {' | '.join(parts)} | published: {published}"


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results/image_kodak_h200.jsonl",
                        help="results JSONL of benchmarks/image_kodak.py")  # fmt: skip
    parser.add_argument("--kodak", type=Path, default=ROOT / "data/real/kodak", help="folder of the Kodak PNGs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/image_kodak_h200_j2k.jsonl",
                        help="JSONL: new codec records, SHACIRA records with the new *_psnr_at_bpp")  # fmt: skip
    parser.add_argument("--plot", type=Path, default=ROOT / "benchmarks/results/image_kodak_anchors.png")
    parser.add_argument("--workers", type=positive_int, default=2, help="processes measuring codec curves")
    args = parser.parse_args(argv)
    records = read_results(args.results)
    if not args.kodak.is_dir():
        fail(args.kodak, "no such folder" if not args.kodak.exists() else "not a folder")
    kodak = [r for r in records if r.get("mode") == "kodak"]
    shacira = [r for r in kodak if r["method"] == "shacira"]
    if not shacira:
        fail(args.results, "no kodak-mode SHACIRA records")
    images = sorted({r["image"] for r in kodak})
    have: Dict[str, set] = {name: set() for name in images}
    for r in kodak:
        if r["method"] != "shacira":
            have[r["image"]].add(r["method"])
    missing = {name: [m for m in image_kodak.available_codecs() if m not in have[name]] for name in images}
    for name in images:
        if missing[name] and not (args.kodak / name).is_file():
            fail(args.kodak / name, "no such file (an image of the results)")
    common = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["kodak_replot.py", *argv]),
        "quick": False,
        "downscale": 1,
    }
    todo = {name: methods for name, methods in missing.items() if methods}
    start = time.time()
    new: Dict[str, Dict[str, List[Dict[str, float]]]] = {}
    if todo:
        with concurrent.futures.ProcessPoolExecutor(max_workers=min(args.workers, len(todo))) as pool:
            futures = {name: pool.submit(measure_image, args.kodak / name, methods) for name, methods in todo.items()}
            for name, future in futures.items():
                new[name] = future.result()
    seconds = time.time() - start
    methods_new = sorted({m for curves in new.values() for m in curves})
    print(f"measured {', '.join(methods_new) or 'nothing'} for {len(new)} images in {seconds:.1f} s "
          f"with {args.workers} workers (Pillow {PIL.__version__}, OpenJPEG {features.version('jpg_2000')})",
          flush=True)  # fmt: skip
    codec_records = [
        {**common, "mode": "kodak", "image": name, "method": method, "setting": image_kodak.codec_setting(p), **p}
        for name, curves in new.items()
        for method, curve in curves.items()
        for p in curve
    ]
    augmented = []
    for r in shacira:
        added = {f"{m}_psnr_at_bpp": image_kodak.psnr_at_bpp(c, r["bpp"]) for m, c in new.get(r["image"], {}).items()}
        by = {"date": common["date"], "machine": common["machine"], "command": common["command"], "keys": sorted(added)}
        augmented.append({**r, **added, "added_by": by} if added else r)

    def write_jsonl(tmp: Path) -> None:
        with tmp.open("w") as f:
            for r in [*codec_records, *augmented]:
                f.write(json.dumps(r) + "\n")

    write_atomically(args.out, write_jsonl)
    combined = [*augmented, *(r for r in kodak if r["method"] != "shacira"), *codec_records]
    title = (f"Kodak ({len(images)} images), mean over images: SHACIRA and Pillow codecs from real bytes\n"
             f"({args.results.name}; stars: published, C3 baselines/kodak.py)")  # fmt: skip
    plot(combined, args.plot, title, methods_new)
    image_kodak.print_table(combined)
    print(anchor_line(combined))
    print(f"wrote {len(codec_records)} codec and {len(augmented)} SHACIRA records to {args.out}, plot {args.plot}")


if __name__ == "__main__":
    main()
