"""A grid's latents as coded sections, and back: the bridge between the torch core and the file codec.

For each latent dimension the entropy model's PMF over the integers actually present ([min, max] of that
dimension) is quantized into an integer table (``codec.coder``); each level's latents are then range-coded with
those tables into one section. The tables travel in the file, so decoding reads integers and never evaluates the
entropy model: a file written on a GPU decodes to the same latents on a CPU. Used by scene and image files alike.
"""

from __future__ import annotations

import math
from typing import Dict, List, Tuple, Union

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
from shacira_nerf.file_layer import MAX_LATENT_VALUE, MAX_LATENTS, GridEntry, read_grid_entry, require_section

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


def read_tables(entry: GridEntry, sections: Dict[str, bytes], prefix: str) -> List[IntegerTable]:
    """A grid's stored integer tables, one per latent dimension, each within the range latents may take."""
    tables = [unpack_table(require_section(sections, f"{prefix}/table/{d}")) for d in range(entry.latent_dim)]
    for d, t in enumerate(tables):
        lo, hi = t.support
        if lo < -MAX_LATENT_VALUE or hi - 1 > MAX_LATENT_VALUE:
            raise ContainerError(f"table {prefix}/table/{d} covers [{lo}, {hi - 1}], outside the latents' range "
                                 f"+-{MAX_LATENT_VALUE} (exact in float32)")  # fmt: skip
    return tables


def _min_bits_per_row(tables: List[IntegerTable]) -> float:
    """The fewest bits any row can cost under the tables: the cheapest symbol of each dimension."""
    return sum(t.precision - math.log2(int(t.freqs.max())) for t in tables)


def check_grid_budget(
    entry: Union[GridEntry, dict], sections: Dict[str, bytes], prefix: str, level_sizes: List[int]
) -> List[IntegerTable]:
    """Refuse a grid whose claimed latents its sections could not hold; returns its tables. From the header and
    the stored tables alone, before anything is decoded or allocated.

    The header's count must be its geometry's (rows x latent dimension) and within ``MAX_LATENTS``; each latents
    section must be long enough for its rows at the cheapest symbol of each table (plus the coder's final words).
    ``entry``: checked (``file_layer.read_grid_entry``) or as ``encode_grid`` wrote it.
    """
    entry = entry if isinstance(entry, GridEntry) else read_grid_entry(prefix, entry)
    rows = sum(level_sizes)
    if rows * entry.latent_dim != entry.num_latents:
        raise ContainerError(f"grid {prefix!r} claims {entry.num_latents:,} latents, but its geometry has {rows:,} "
                             f"rows x {entry.latent_dim}")  # fmt: skip
    if entry.num_latents > MAX_LATENTS:
        raise ContainerError(
            f"grid {prefix!r} has {entry.num_latents:,} latents, more than the {MAX_LATENTS:,} allowed"
        )
    tables = read_tables(entry, sections, prefix)
    per_row = _min_bits_per_row(tables)
    blocks = [(WHOLE_TABLE_SECTION, rows)] if entry.latent_streams == "whole_table" else list(enumerate(level_sizes))
    for name, block_rows in blocks:
        section = f"{prefix}/latents/{name}"
        capacity = 8 * len(require_section(sections, section)) + CODER_SLACK_BITS
        needed = block_rows * per_row
        if needed > capacity:
            raise ContainerError(f"section {section!r} is {len(sections[section]):,} bytes, too short for its "
                                 f"{block_rows:,} rows (at least {needed / 8:,.0f} bytes under its tables)")  # fmt: skip
    return tables


CODER_SLACK_BITS = 64
"""Bits a range-coded stream may fall short of its information content (the coder's state flush), per section."""


def decode_grid(
    entry: Union[GridEntry, dict], sections: Dict[str, bytes], prefix: str, level_sizes: List[int]
) -> np.ndarray:
    """Integer latents ``[rows, latent_dim]`` (int32) of one grid from its sections (budget-checked first)."""
    entry = entry if isinstance(entry, GridEntry) else read_grid_entry(prefix, entry)
    tables = check_grid_budget(entry, sections, prefix, level_sizes)
    if entry.latent_streams == "whole_table":
        section = sections[f"{prefix}/latents/{WHOLE_TABLE_SECTION}"]
        columns = decode_symbols(section, [(sum(level_sizes), t) for t in tables])
        return np.stack(columns, axis=1).astype(np.int32)
    blocks = []
    for level, rows in enumerate(level_sizes):
        columns = decode_symbols(sections[f"{prefix}/latents/{level}"], [(rows, t) for t in tables])
        blocks.append(np.stack(columns, axis=1).astype(np.int32))
    return np.concatenate(blocks, axis=0)
