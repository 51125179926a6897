"""Collect GPU rate-distortion runs (``runs.jsonl`` written by ``gpu/train_eval.sh``) into results and a plot.

    python benchmarks/rd.py collect RUNS_JSONL --scene lego --machine "..." --date YYYY-MM-DD [--tag T] [--match S]
    python benchmarks/rd.py plot --scene lego [--tag T]

``collect`` appends one object per run (only runs whose command contains S, if given) to
``results/rd_<scene>[_<tag>].jsonl`` (a tag keeps runs of another protocol apart, e.g. ``blender``) with exactly the keys of the benchmark
(scene, method, lambda, iterations, psnr, ssim, lpips, size_bytes, size_bytes_fp32, seconds_per_iter,
train_seconds, date, machine, command, seed, lr, and for shacira quantizer); ``plot`` draws PSNR against MB (log x) into ``results/rd_<scene>.png`` and
prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS  # noqa: E402

KEYS = ["scene", "method", "lambda", "iterations", "psnr", "ssim", "lpips", "size_bytes", "size_bytes_fp32",
        "seconds_per_iter", "train_seconds", "date", "machine", "command", "seed", "lr"]  # fmt: skip


def _seed(command: str) -> int:
    """nerfstudio's seed (``--machine.seed``, default 42)."""
    m = re.search(r"--machine\.seed\s+(\d+)", command)
    return int(m.group(1)) if m else 42


def _networks_lr(method: str, command: str) -> float:
    """The networks' (fields') learning rate: the command's, else the method's default (nerfacto 1e-2, shacira
    5e-4)."""
    m = re.search(r"--optimizers\.fields\.optimizer\.lr\s+(\S+)", command)
    return float(m.group(1)) if m else (5e-4 if method == "shacira" else 1e-2)


def _lambda(command: str) -> float:
    """The command's λ, else ``ShaciraModelConfig``'s default: collect runs beside the wheel that trained them."""
    m = re.search(r"--pipeline\.model\.rate-lambda\s+(\S+)", command)
    if m:
        return float(m.group(1))
    from shacira_nerf.nerf.model import ShaciraModelConfig

    return ShaciraModelConfig.rate_lambda


def _nerfacto_lr(command: str) -> float:
    """The networks' learning rate of a nerfacto run (nerfstudio's default 1e-2 unless the command sets it)."""
    m = re.search(r"--optimizers\.fields\.optimizer\.lr\s+(\S+)", command)
    return float(m.group(1)) if m else 1e-2


TABLE_FLAG = r"--pipeline\.model\.log2-hashmap-size\s+(\d+)"
PROPOSAL_TABLE_FLAG = r"--pipeline\.model\.proposal-log2-hashmap-size\s+(\d+)"
"""The field's and the proposal grids' table-size flags in a run's command."""


def _variant(command: str) -> str:
    """What a shacira run changed besides λ (its own line on the plot): the field's table size, the entropy model,
    the decoders' learning rate, the seed; "" for the defaults."""
    parts = []
    for flag, fmt in (
        (TABLE_FLAG, "2^{} table"),
        (PROPOSAL_TABLE_FLAG, "2^{} proposal tables"),
        (r"--pipeline\.model\.entropy-model\s+(\S+)", "{}"),
        (r"--optimizers\.shacira-decoders\.optimizer\.lr\s+(\S+)", "decoders lr {}"),
        (r"--machine\.seed\s+(\d+)", "seed {}"),
    ):
        m = re.search(flag, command)
        if m and not (fmt == "seed {}" and m.group(1) == "42"):
            parts.append(fmt.format(m.group(1)))
    return ", ".join(parts)


def _tables(command: str) -> str:
    """The field's table size, and the proposal grids' when set: "2^16", "2^15/p2^14"."""
    m = re.search(PROPOSAL_TABLE_FLAG, command)
    return f"2^{_log2_table(command)}" + (f"/p2^{m.group(1)}" if m else "")


def _log2_table(command: str) -> int:
    m = re.search(TABLE_FLAG, command)
    return int(m.group(1)) if m else 19


PUBLISHED = [  # (label, MB, PSNR): NeRF-synthetic, 800 px, means over the eight scenes (issue 14's anchors)
    ("Instant-NGP (float16)", 26.0, 33.2),
    ("BiRF", 0.5, 32.03),
    ("CNC", 0.42, 33.2),
]
"""Published anchors drawn as labelled reference marks: other resolution and scenes, so a scale, not a comparison."""


def results_file(scene: str, tag: str, suffix: str) -> Path:
    return RESULTS / f"rd_{scene}{'_' + tag if tag else ''}.{suffix}"


def _quantizer(command: str, default: str) -> str:
    """The run's rounding stand-in: the command's ``--pipeline.model.quantizer``, else the default of the code that
    ran (``soft_round`` before 2026-12-02's session 8, ``sga`` since)."""
    m = re.search(r"--pipeline\.model\.quantizer\s+(\S+)", command)
    return m.group(1) if m else default


def collect(
    runs: Path, scene: str, machine: str, date: str, tag: str = "", match: str = "", quantizer: str = "sga"
) -> Path:
    rows = []
    for line in runs.read_text().splitlines():
        r = json.loads(line)
        if match not in r["command"]:
            continue
        lpips = r.get("lpips")
        row = {
            "scene": scene, "method": r["method"],
            "lambda": _lambda(r["command"]) if r["method"] == "shacira" else None,
            "iterations": r["iterations"], "psnr": r["psnr"], "ssim": r["ssim"],
            "lpips": None if lpips is None or (isinstance(lpips, float) and math.isnan(lpips)) else lpips,
            "size_bytes": r["size_bytes"], "size_bytes_fp32": r.get("size_bytes_fp32"),
            "seconds_per_iter": r["seconds_per_iter"], "train_seconds": r["train_seconds"],
            "date": date, "machine": machine, "command": r["command"],
            "seed": _seed(r["command"]), "lr": _networks_lr(r["method"], r["command"]),
        }  # fmt: skip
        if r["method"] == "shacira":
            row["quantizer"] = _quantizer(r["command"], quantizer)
        rows.append(row)
    out = results_file(scene, tag, "jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        for row in rows:
            f.write(json.dumps({k: row[k] for k in KEYS + ["quantizer"] if k in row}) + "\n")
    return out


def plot(scene: str, tag: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in results_file(scene, tag, "jsonl").read_text().splitlines()]
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    # One line per method and training length, and for nerfacto one per learning rate: its torch path is very
    # sensitive to it.
    series = {}
    for r in rows:
        # Rows written before the quantizer was recorded all ran soft rounding (then the only NeRF default).
        quantizer = r.get("quantizer", _quantizer(r["command"], "soft_round"))
        if r["method"] == "shacira":
            variant = _variant(r["command"])
            method = f"shacira {quantizer}{f' ({variant})' if variant else ''}"
            if all("table" in part for part in variant.split(", ") if part):  # the table sizes at this λ, too
                series.setdefault(f"shacira {quantizer}, λ {r['lambda']:g} across tables, {r['iterations']} its",
                                  []).append(r)  # fmt: skip
        else:
            method = f"nerfacto, lr {_nerfacto_lr(r['command']):g}"
        series.setdefault(f"{method}, {r['iterations']} its", []).append(r)
    # A λ's "across tables" line is drawn when it ran at two table sizes or more; its variants' points are on it.
    across = [m for k, m in series.items() if " across tables" in k and len({_tables(r["command"]) for r in m}) > 1]
    on_across = {id(r) for members in across for r in members}
    for key, members in sorted(series.items()):
        pts = sorted((r["size_bytes"] / 1e6, r["psnr"], r["size_bytes"], r) for r in members)
        shacira, tables = key.startswith("shacira"), " across tables" in key
        if tables and not any(members is m for m in across):
            continue  # one table size at this λ: the λ line has it
        if shacira and not tables and "table" in key and all(id(r) in on_across for r in members):
            continue  # a table-size variant's points are on their λ's dashed line
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="D" if tables else "o" if shacira else "s",
                linestyle="--" if tables else "-", label=key)  # fmt: skip
        for mb, psnr, _, r in pts:
            label = f"λ={r['lambda']:g}" if shacira and not tables else _tables(r["command"])
            if not (tables and label == "2^19"):  # the default table's point is on the λ line already
                ax.annotate(label, (mb, psnr), textcoords="offset points", xytext=(4, -10 if tables else 4), fontsize=7)
    longest = max((r["iterations"] for r in rows if r["method"] == "nerfacto"), default=None)
    if longest is not None:  # the reference a ΔPSNR is read against: the best nerfacto at its longest length
        best = max(r["psnr"] for r in rows if r["method"] == "nerfacto" and r["iterations"] == longest)
        ax.axhline(best, color="gray", linestyle=":", linewidth=1)
        ax.annotate(f"best nerfacto, {longest} its: {best:.2f} dB", (0.38, best), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(0, 3), fontsize=7, color="gray")  # fmt: skip
    for name, mb, psnr in PUBLISHED:
        ax.plot([mb], [psnr], marker="*", color="gray", markersize=9, linestyle="none")
        ax.annotate(name, (mb, psnr), textcoords="offset points", xytext=(5, -9), fontsize=7, color="gray")
    ax.text(0.02, 0.03, "gray stars: published, 800 px, 8-scene means (a scale, not this scene)",
            transform=ax.transAxes, va="bottom", fontsize=7, color="gray")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("size (MB = 10^6 bytes; shacira: .shac file, nerfacto: float16 parameters)")
    ax.set_ylabel("PSNR (dB), all test views")
    its = sorted({r["iterations"] for r in rows})
    ax.set_title(f"{scene}{f' ({tag})' if tag else ''}: rate-distortion at {', '.join(map(str, its))} iterations")
    if not any(r["method"] == "nerfacto" for r in rows):
        ax.text(0.98, 0.03, "no nerfacto run evaluated (benchmarks/README.md)", transform=ax.transAxes,
                ha="right", fontsize=8, color="gray")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    fig.tight_layout()
    fig.savefig(results_file(scene, tag, "png"), dpi=130, bbox_inches="tight")  # the legend below the axes stays whole
    print("| method | λ / lr | iterations | PSNR | SSIM | size (MB) | fp32 (MB) | s/iter | train s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(rows, key=lambda r: (r["method"], -r["size_bytes"])):
        lam = (
            f"λ {r['lambda']:g}" + (f" ({_variant(r['command'])})" if _variant(r["command"]) else "")
            if r["method"] == "shacira"
            else f"2^{_log2_table(r['command'])}, lr {_nerfacto_lr(r['command']):g}"
        )
        fp32 = "" if r["size_bytes_fp32"] is None else f"{r['size_bytes_fp32'] / 1e6:.2f}"
        print(f"| {r['method']} | {lam} | {r['iterations']} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
              f"{r['size_bytes'] / 1e6:.3f} | {fp32} | {r['seconds_per_iter']:.4f} | {r['train_seconds']:.0f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("runs", type=Path)
    c.add_argument("--scene", required=True)
    c.add_argument("--machine", required=True)
    c.add_argument("--date", required=True)
    c.add_argument("--tag", default="", help="results file suffix: rd_<scene>_<tag>.jsonl")
    c.add_argument("--match", default="", help="only runs whose command contains this text")
    c.add_argument("--quantizer", default="sga", help="the quantizer of runs whose command does not name one")
    p = sub.add_parser("plot")
    p.add_argument("--scene", required=True)
    p.add_argument("--tag", default="")
    args = parser.parse_args()
    if args.cmd == "collect":
        print(collect(args.runs, args.scene, args.machine, args.date, args.tag, args.match, args.quantizer))
    else:
        plot(args.scene, args.tag)


if __name__ == "__main__":
    main()
