"""What ``shacira info`` reports about a file: byte counts by kind, bits per latent, ratios; torch-free.

Every number is computed from the file's bytes (the container layout) except the "estimate" block, which is the
training-time estimate the writer stored in the header, shown beside the truth for comparison. The header's values
are checked where they are read (``file_layer.py``), and every string from the file is escaped before it is printed.
"""

from __future__ import annotations

from typing import Any, Dict, List

from shacira_nerf.codec import ARRAY_DTYPES, container_layout, escape
from shacira_nerf.file_layer import IMAGE_KIND, export_hint, image_size, parse_envelope
from shacira_nerf.units import BYTES_PER_MB


def _kind_of(section: str) -> str:
    if "/latents/" in section:
        return "latents"
    if "/table/" in section:
        return "entropy_tables"
    if section.startswith("network/"):
        return "networks"
    return section.split("/")[0]


def network_precisions(data: bytes, sections: List[Dict[str, Any]]) -> Dict[str, int]:
    """How many network tensors the file stores at each precision, read from each section's array head (its first
    byte, the dtype code): a tensor int8 does not cover stays float16 or float32, so the settings alone do not say."""
    view = memoryview(data).cast("B")
    counts: Dict[str, int] = {}
    for s in sections:
        if s["name"].startswith("network/") and s["payload_bytes"]:
            dtype = ARRAY_DTYPES.get(view[s["payload_offset"]])
            name = "unknown" if dtype is None else dtype.name
            counts[name] = counts.get(name, 0) + 1
    return counts


def grid_breakdown(grids: Dict[str, Any], sections: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per grid: its largest table (log2 rows), latents, the bytes of its latent and table sections with their
    framing (what the file spends on it), and its bits per latent (of the coded payload, as the file's total).

    Why: a scene's grids are the field and each proposal network; which of them the bytes go to says which table size
    to shrink (``log2-hashmap-size`` or ``proposal-log2-hashmap-size``)."""
    out = {}
    for name, grid in grids.items():
        mine = [s for s in sections if s["name"].startswith(f"{name}/")]
        payload = sum(s["payload_bytes"] for s in mine if "/latents/" in s["name"])
        out[name] = {
            "log2_hashmap_size": grid.geometry["log2_hashmap_size"],
            "num_latents": grid.num_latents,
            "latent_bytes": sum(s["framed_bytes"] for s in mine if "/latents/" in s["name"]),
            "table_bytes": sum(s["framed_bytes"] for s in mine if "/table/" in s["name"]),
            "bits_per_latent": 8 * payload / grid.num_latents if grid.num_latents else None,
        }
    return out


def file_report(data: bytes) -> Dict[str, Any]:
    """Verify every checksum and describe the file (raises ContainerError if anything is wrong)."""
    with export_hint():
        layout = container_layout(data)
    env = parse_envelope(layout["header"], {})
    by_kind: Dict[str, int] = {"header": layout["header_bytes"]}
    for s in layout["sections"]:
        kind = _kind_of(s["name"])
        by_kind[kind] = by_kind.get(kind, 0) + s["framed_bytes"]
    total = layout["total_bytes"]
    latent_payload = sum(s["payload_bytes"] for s in layout["sections"] if "/latents/" in s["name"])
    num_latents = env.num_latents
    report: Dict[str, Any] = {
        "format_version": layout["format_version"],
        "kind": env.kind,
        "producer": env.producer,
        "total_bytes": total,
        "total_MB": total / BYTES_PER_MB,
        "bytes_by_kind": by_kind,
        "sections": [
            {"name": s["name"], "payload_bytes": s["payload_bytes"], "framed_bytes": s["framed_bytes"]}
            for s in layout["sections"]
        ],
        "checksums": "ok",
        "num_latents": num_latents,
        "latent_bytes": latent_payload,
        "bits_per_latent": 8 * latent_payload / num_latents if num_latents else None,
        "shannon_bits": sum(g.shannon_bits for g in env.grids.values()),
        "entropy_models": {name: g.entropy_model for name, g in env.grids.items()},
        "grids": grid_breakdown(env.grids, layout["sections"]),
        "network_precisions": network_precisions(data, layout["sections"]),
    }
    if num_latents:
        # The same tables stored plainly: rows x latent_dim numbers at float32 / float16.
        report["ratio_to_float32_grid"] = num_latents * 4 / total
        report["ratio_to_float16_grid"] = num_latents * 2 / total
    if env.kind == IMAGE_KIND:
        h, w = image_size(env.header)
        report["image_size"] = [h, w]
        report["bpp"] = 8 * total / (h * w)
    if "estimate" in env.header:
        report["estimate"] = env.estimate
    return report


def format_report(path: str, report: Dict[str, Any]) -> str:
    """Human-readable lines for ``shacira info`` (strings from the file escaped)."""
    lines = [
        f"{escape(path)}: shacira {escape(report['kind'])} file, format version {report['format_version']} "
        f"({escape(report['producer'])})",
        f"  size:            {report['total_bytes']:,} bytes = {report['total_MB']:.6f} MB (the file's length)",
        f"  checksums:       {report['checksums']} ({len(report['sections'])} sections)",
    ]
    for kind, size in sorted(report["bytes_by_kind"].items(), key=lambda kv: -kv[1]):
        lines.append(f"    {escape(kind):<16} {size:>12,} bytes  ({100 * size / report['total_bytes']:5.1f}%)")
    if report.get("num_latents"):
        lines.append(f"  latents:         {report['num_latents']:,} coded in {report['latent_bytes']:,} bytes "
                     f"= {report['bits_per_latent']:.3f} bits/latent "
                     f"(Shannon bound under the stored tables: {report['shannon_bits'] / 8:,.0f} bytes)")  # fmt: skip
        models = report.get("entropy_models", {})
        by_model: Dict[str, list] = {}
        for name, model in models.items():
            by_model.setdefault(model, []).append(escape(name))
        used = "; ".join(f"{model} ({', '.join(names)})" for model, names in sorted(by_model.items()))
        lines.append(f"  entropy model:   {used}")
        for name, grid in report.get("grids", {}).items():
            share = 100 * grid["latent_bytes"] / report["total_bytes"]
            per = "" if grid["bits_per_latent"] is None else f", {grid['bits_per_latent']:.3f} bits each"
            lines.append(f"    {escape(name):<16} {grid['latent_bytes']:>12,} bytes  ({share:5.1f}%)  "
                         f"2^{grid['log2_hashmap_size']}-row table, {grid['num_latents']:,} latents{per}")  # fmt: skip
        lines.append(f"  vs plain grid:   {report['ratio_to_float32_grid']:.1f}x smaller than float32, "
                     f"{report['ratio_to_float16_grid']:.1f}x smaller than float16 (same tables, whole file)")  # fmt: skip
    precisions = report.get("network_precisions")
    if precisions:
        stored = ", ".join(f"{'int8 with a float32 scale' if name == 'int8' else name} ({count} tensors)"
                           for name, count in sorted(precisions.items(), key=lambda kv: -kv[1]))  # fmt: skip
        lines.append(f"  networks:        stored as {stored}")
    if "bpp" in report:
        h, w = report["image_size"]
        lines.append(f"  image:           {w}x{h} pixels, {report['bpp']:.4f} bits per pixel (file bits / pixels)")
    size_mb = report.get("estimate", {}).get("size_MB")
    if size_mb is not None:
        lines.append(
            f"  estimate:        {size_mb:.6f} MB at export time (training-time estimate; the file is the truth)"
        )
    return "\n".join(lines)
