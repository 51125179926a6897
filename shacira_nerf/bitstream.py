"""A grid's latents as coded sections, and back: the bridge between the torch core and the file codec.

For each latent dimension the entropy model's PMF over the integers actually present ([min, max] of that
dimension) is quantized into an integer table (``codec.coder``); each level's latents are then range-coded with
those tables into one section. The tables travel in the file, so decoding reads integers and never evaluates the
entropy model: a file written on a GPU decodes to the same latents on a CPU. Used by scene and image files alike.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from shacira_nerf.codec import (
    ContainerError,
    IntegerTable,
    decode_symbols,
    encode_symbols,
    pack_table,
    table_bits,
    unpack_table,
)
from shacira_nerf.core.grid import ShaciraGrid

TABLE_PRECISION = 16
"""Bits of precision of the stored integer probability tables (a symbol costs at most 16 bits)."""


def grid_tables(grid: ShaciraGrid, latents: np.ndarray, precision: int = TABLE_PRECISION) -> List[IntegerTable]:
    """One integer table per latent dimension, over the support the latents use."""
    tables = []
    for d in range(latents.shape[1]):
        lo, hi = int(latents[:, d].min()), int(latents[:, d].max())
        tables.append(IntegerTable.from_pmf(grid.entropy_model.pmf(d, lo, hi), offset=lo, precision=precision))
    return tables


WHOLE_TABLE_SECTION = "all"
"""Latents section suffix (``<prefix>/latents/all``) when the whole table is one coded stream."""


def encode_grid(grid: ShaciraGrid, prefix: str, whole_table: bool = False) -> Tuple[dict, List[Tuple[str, bytes]]]:
    """Header entry and sections (``<prefix>/table/<d>``, ``<prefix>/latents/<level>``) for one grid.

    ``whole_table``: code all levels as one stream in one section (``<prefix>/latents/all``) instead of one section
    per level. Each section costs its framing (name, length, CRC) and each stream the coder's final word: about 30
    bytes a level, noise for a scene but a tenth of a 15 kB image file. Levels stay separately decodable otherwise.
    """
    latents = grid.integer_latents().cpu().numpy().astype(np.int64)
    tables = grid_tables(grid, latents)
    sections = [(f"{prefix}/table/{d}", pack_table(t)) for d, t in enumerate(tables)]
    offsets = grid.latents.offsets
    blocks = [latents] if whole_table else [latents[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    names = [WHOLE_TABLE_SECTION] if whole_table else [str(level) for level in range(len(blocks))]
    shannon_bits = 0.0
    for name, block in zip(names, blocks):
        streams = [(block[:, d], tables[d]) for d in range(block.shape[1])]
        sections.append((f"{prefix}/latents/{name}", encode_symbols(streams)))
        shannon_bits += sum(table_bits(s, t) for s, t in streams)
    header = {
        "geometry": grid.geometry.to_dict(),
        "latent_dim": grid.latent_dim,
        "feature_dim": grid.feature_dim,
        "num_latents": int(latents.size),
        "shannon_bits": shannon_bits,
    }
    if whole_table:
        header["latent_streams"] = "whole_table"
    return header, sections


def decode_grid(header: dict, sections: Dict[str, bytes], prefix: str, level_sizes: List[int]) -> np.ndarray:
    """Integer latents ``[rows, latent_dim]`` (int32) of one grid from its sections."""
    latent_dim = int(header["latent_dim"])
    tables = [unpack_table(_section(sections, f"{prefix}/table/{d}")) for d in range(latent_dim)]
    layout = header.get("latent_streams", "per_level")
    if layout == "whole_table":
        section = _section(sections, f"{prefix}/latents/{WHOLE_TABLE_SECTION}")
        columns = decode_symbols(section, [(sum(level_sizes), t) for t in tables])
        return np.stack(columns, axis=1).astype(np.int32)
    if layout != "per_level":
        raise ContainerError(f"unknown latent stream layout {layout!r} (written by a newer shacira-nerf?)")
    blocks = []
    for level, rows in enumerate(level_sizes):
        columns = decode_symbols(_section(sections, f"{prefix}/latents/{level}"), [(rows, t) for t in tables])
        blocks.append(np.stack(columns, axis=1))
    return np.concatenate(blocks, axis=0).astype(np.int32)


def _section(sections: Dict[str, bytes], name: str) -> bytes:
    if name not in sections:
        raise ContainerError(f"file is missing section '{name}'")
    return sections[name]
