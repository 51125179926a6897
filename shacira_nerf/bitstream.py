"""A grid's latents as coded sections, and back: the bridge between the torch core and the file codec.

For each coding table of the entropy model (one per latent dimension for the factorized model, one per level and
dimension for the per-level one: ``EntropyModel.table_index``) its PMF over the integers actually present ([min, max]
of the latents it codes) is quantized into an integer table (``codec.coder``); each level's latents are then
range-coded with those tables into one section. The tables travel in the file, so decoding reads integers and never evaluates the
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
from shacira_nerf.core.entropy_model import table_layout
from shacira_nerf.core.grid import ShaciraGrid
from shacira_nerf.file_layer import MAX_LATENT_VALUE, MAX_LATENTS, GridEntry, read_grid_entry, require_section

TABLE_PRECISION = 16
"""Bits of precision of the stored integer probability tables (a symbol costs at most 16 bits)."""


WHOLE_TABLE_SECTION = "all"
"""Latents section suffix (``<prefix>/latents/all``) when the whole table is one coded stream."""

Stream = Tuple[int, int, int, int]
"""One coded stream: (first row, rows, latent channel, coding table)."""


def stream_layout(
    entropy_model: str, level_sizes: List[int], latent_dim: int, whole_table: bool
) -> List[Tuple[str, List[Stream]]]:
    """Each latents section's name and its streams in coding order: what the encoder writes and the decoder reads,
    from header values alone (``table_layout`` names each stream's table).

    One section per level, one stream per dimension in it; or (``whole_table``) one section, holding one stream per
    dimension over all rows when every level shares the dimension's table (factorized), else one per (level,
    dimension) in level order.
    """
    layout = table_layout(entropy_model, len(level_sizes), latent_dim)
    starts = np.cumsum([0, *level_sizes[:-1]]).tolist()
    per_level = [[(start, rows, d, layout[level][d]) for d in range(latent_dim)]
                 for level, (start, rows) in enumerate(zip(starts, level_sizes))]  # fmt: skip
    if not whole_table:
        return [(str(level), streams) for level, streams in enumerate(per_level)]
    if all(row == layout[0] for row in layout):
        return [(WHOLE_TABLE_SECTION, [(0, sum(level_sizes), d, layout[0][d]) for d in range(latent_dim)])]
    return [(WHOLE_TABLE_SECTION, [s for streams in per_level for s in streams])]


def grid_tables(
    grid: ShaciraGrid, latents: np.ndarray, precision: int = TABLE_PRECISION
) -> Tuple[List[IntegerTable], List[Tuple[str, List[Stream]]]]:
    """One integer table per coding table of the grid's entropy model, each over the support of the latents it codes
    (``EntropyModel.pmf``), and the stream layout they code."""
    model = grid.entropy_model
    sections = stream_layout(model.name, grid.geometry.level_sizes, latents.shape[1], whole_table=False)
    lows: Dict[int, int] = {}
    highs: Dict[int, int] = {}
    for level, (_, streams) in enumerate(sections):
        for first, rows, d, t in streams:
            if model.table_index(level, d) != t:  # the model's tables must be the ones the decoder will read
                raise ValueError(f"{model.name} entropy model codes level {level} dimension {d} with table "
                                 f"{model.table_index(level, d)}, the file layout says {t}")  # fmt: skip
            column = latents[first : first + rows, d]
            lows[t] = min(lows.get(t, int(column.min())), int(column.min()))
            highs[t] = max(highs.get(t, int(column.max())), int(column.max()))
    if sorted(lows) != list(range(model.num_tables)):
        raise ValueError(f"{model.name} entropy model has {model.num_tables} tables, its layout codes {len(lows)}")
    return [IntegerTable.from_pmf(model.pmf(t, lows[t], highs[t]), offset=lows[t], precision=precision)
            for t in range(model.num_tables)], sections  # fmt: skip


def encode_grid(grid: ShaciraGrid, prefix: str, whole_table: bool = False) -> Tuple[dict, List[Tuple[str, bytes]]]:
    """Header entry and sections (``<prefix>/table/<t>``, ``<prefix>/latents/<level>``) for one grid.

    ``whole_table``: code all levels as one stream in one section (``<prefix>/latents/all``) instead of one section
    per level. Each section costs its framing (name, length, CRC) and each stream the coder's final word: about 30
    bytes a level, noise for a scene but a tenth of a 15 kB image file. Levels stay separately decodable otherwise.
    The entry names the entropy model unless it is the factorized one (so factorized files keep their old bytes).
    """
    latents = grid.integer_latents().cpu().numpy().astype(np.int64)
    tables, _ = grid_tables(grid, latents)
    model = grid.entropy_model.name
    sections = [(f"{prefix}/table/{t}", pack_table(table)) for t, table in enumerate(tables)]
    shannon_bits = 0.0
    for name, layout in stream_layout(model, grid.geometry.level_sizes, latents.shape[1], whole_table):
        streams = [(latents[first : first + rows, d], tables[t]) for first, rows, d, t in layout]
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
    if model != "factorized":
        header["entropy_model"] = model
        header["num_tables"] = len(tables)
    return header, sections


def read_tables(entry: GridEntry, sections: Dict[str, bytes], prefix: str) -> List[IntegerTable]:
    """A grid's stored integer tables (as many as its entropy model has), each within the range latents may take."""
    tables = [unpack_table(require_section(sections, f"{prefix}/table/{t}")) for t in range(entry.num_tables)]
    for t, table in enumerate(tables):
        lo, hi = table.support
        if lo < -MAX_LATENT_VALUE or hi - 1 > MAX_LATENT_VALUE:
            raise ContainerError(f"table {prefix}/table/{t} covers [{lo}, {hi - 1}], outside the latents' range "
                                 f"+-{MAX_LATENT_VALUE} (exact in float32)")  # fmt: skip
    return tables


def _min_bits(table: IntegerTable) -> float:
    """The fewest bits any symbol costs under the table."""
    return table.precision - math.log2(int(table.freqs.max()))


def _layout_of(entry: GridEntry, level_sizes: List[int]) -> List[Tuple[str, List[Stream]]]:
    """The stream layout of a checked entry for these level sizes (which must be its geometry's levels)."""
    if len(level_sizes) != entry.geometry["num_levels"]:
        raise ContainerError(f"grid has {entry.geometry['num_levels']} levels in its header, {len(level_sizes)} in "
                             "its settings")  # fmt: skip
    return stream_layout(entry.entropy_model, level_sizes, entry.latent_dim, entry.latent_streams == "whole_table")


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
    for name, streams in _layout_of(entry, level_sizes):
        section = f"{prefix}/latents/{name}"
        capacity = 8 * len(require_section(sections, section)) + CODER_SLACK_BITS
        needed = sum(rows * _min_bits(tables[t]) for _, rows, _, t in streams)
        if needed > capacity:
            rows = sum(r for _, r, d, _ in streams if d == 0)
            raise ContainerError(f"section {section!r} is {len(sections[section]):,} bytes, too short for its "
                                 f"{rows:,} rows (at least {needed / 8:,.0f} bytes under its tables)")  # fmt: skip
    return tables


CODER_SLACK_BITS = 64
"""Bits a range-coded stream may fall short of its information content (the coder's state flush), per section."""


def decode_grid(
    entry: Union[GridEntry, dict], sections: Dict[str, bytes], prefix: str, level_sizes: List[int]
) -> np.ndarray:
    """Integer latents ``[rows, latent_dim]`` (int32) of one grid from its sections (budget-checked first)."""
    entry = entry if isinstance(entry, GridEntry) else read_grid_entry(prefix, entry)
    tables = check_grid_budget(entry, sections, prefix, level_sizes)
    out = np.empty((sum(level_sizes), entry.latent_dim), dtype=np.int32)
    for name, streams in _layout_of(entry, level_sizes):
        columns = decode_symbols(sections[f"{prefix}/latents/{name}"], [(rows, tables[t]) for _, rows, _, t in streams])
        for (first, rows, d, _), column in zip(streams, columns):
            out[first : first + rows, d] = column
    return out
