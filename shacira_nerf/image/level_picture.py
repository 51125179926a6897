"""The per-level picture of an image field (appendix Figure 4): each level's decoded features as one tile.

What ``shacira image grid`` draws: the learned coarse-to-fine decomposition, for looking at what each level stores.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from shacira_nerf.image.field import ImageField


def level_picture(field: ImageField, max_tile: int = 512) -> np.ndarray:
    """The decoded features of every level as one uint8 picture (appendix Figure 4).

    Each level's features (the decoder applied to the rounded latents, interpolated by the grid) are evaluated at
    the pixel centres of the image (shrunk so that its longer side is at most ``max_tile``), normalised to [0, 1]
    per level, and tiled coarse to fine, left to right then top to bottom. One feature is shown as gray, two as red
    and green, three or more as RGB of the first three.
    """
    scale = min(1.0, max_tile / max(field.height, field.width))
    th, tw = max(1, round(field.height * scale)), max(1, round(field.width * scale))
    features = field.level_features(th, tw).float().cpu().numpy()  # [levels, th, tw, f]
    levels = features.shape[0]
    cols = math.ceil(math.sqrt(levels))
    rows = math.ceil(levels / cols)
    gap = 4
    canvas = np.full((rows * th + (rows + 1) * gap, cols * tw + (cols + 1) * gap, 3), 255, dtype=np.uint8)
    for level in range(levels):
        f = features[level]
        lo, hi = float(f.min()), float(f.max())
        f = (f - lo) / (hi - lo) if hi > lo else np.full_like(f, 0.5)
        if f.shape[2] == 1:
            tile = np.repeat(f, 3, axis=2)
        else:
            tile = np.zeros(f.shape[:2] + (3,), dtype=f.dtype)
            tile[..., : min(3, f.shape[2])] = f[..., :3]
        y, x = gap + (level // cols) * (th + gap), gap + (level % cols) * (tw + gap)
        canvas[y : y + th, x : x + tw] = np.round(tile * 255).astype(np.uint8)
    picture = Image.fromarray(canvas)
    if th >= 24 and tw >= 48:
        draw = ImageDraw.Draw(picture)
        font = ImageFont.load_default()
        resolutions = field.grid.geometry.resolutions
        for level in range(levels):
            y, x = gap + (level // cols) * (th + gap), gap + (level % cols) * (tw + gap)
            label = f"L{level} {resolutions[level]}x{resolutions[level]}"
            box = draw.textbbox((x + 3, y + 2), label, font=font)
            draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
            draw.text((x + 3, y + 2), label, fill=(255, 255, 255), font=font)
    return np.asarray(picture)
