"""plots@figure8: label frames drawn over their raw frames (a contact sheet), cells per frame.

The sheet shows the first frame of up to SHEET_MOVIES movies spread evenly over the sorted
movie list; each cell gets a colour fixed by its label and a white outline, and the caption
names the movie and its cell count. Equal stores give equal PNG bytes.
"""

from __future__ import annotations

import io
import math
from collections import Counter

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage.segmentation import find_boundaries

from stages.core.selection import even_indices
from stages.core.store import Row, Store
from stages.formats.images import decode_array
from stages.sources.figure8.clean import movies_of
from stages.sources.figure8.conf import Figure8Conf

SHEET_MOVIES = 6
COLUMNS = 3
TILE = 192  # pixels of a tile's longer side on the sheet
CAPTION = 14
ALPHA = 0.45
BUCKETS = 10


def grey(raw: np.ndarray) -> np.ndarray:
    """Return a raw frame as 8-bit grey, stretched between its 1st and 99th percentiles."""
    img = raw.astype(np.float64)
    if img.ndim == 3:
        img = img.mean(axis=2)
    lo, hi = np.percentile(img, [1, 99])
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((img - lo) * scale, 0, 255).astype(np.uint8)


def colours(labels: np.ndarray) -> np.ndarray:
    """Return an RGB colour per pixel fixed by its label (golden-ratio hues, full value)."""
    hue = (labels.astype(np.float64) * 0.618033988749895) % 1.0
    k = (np.array([5.0, 3.0, 1.0]) + hue[..., None] * 6) % 6
    return (255 * (1 - np.clip(np.minimum(k, 4 - k), 0, 1) * 0.8)).astype(np.uint8)


def overlay(raw: np.ndarray, labels: np.ndarray) -> Image.Image:
    """Return labels drawn over a raw frame: tinted cells, white outlines."""
    base = np.repeat(grey(raw)[..., None], 3, axis=2).astype(np.float64)
    cell = labels > 0
    base[cell] = (1 - ALPHA) * base[cell] + ALPHA * colours(labels)[cell]
    base[find_boundaries(labels, mode="inner")] = 255
    image = Image.fromarray(base.round().astype(np.uint8))
    h, w = labels.shape
    scale = TILE / max(h, w)
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.NEAREST)


def sheet(store: Store, pairs: list[tuple[Row, Row]]) -> bytes:
    """Return the contact sheet of (label row, raw row) pairs as PNG bytes."""
    rows = max(1, math.ceil(len(pairs) / COLUMNS))
    canvas = Image.new("RGB", (COLUMNS * TILE, rows * (TILE + CAPTION)), (32, 32, 32))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=11)
    for i, (lab, raw) in enumerate(pairs):
        r, c = divmod(i, COLUMNS)
        tile = overlay(decode_array(store.read(raw)), decode_array(store.read(lab)))
        x, y = c * TILE, r * (TILE + CAPTION)
        canvas.paste(tile, (x, y))
        m = lab.meta
        where = f"x{m['x']:02d} y{m['y']:02d} " if "x" in m else ""
        caption = f"{where}part {m['part']} t{m['frame']}: {m.get('cells', 0)} cells"
        draw.text((x + 2, y + TILE + 1), caption, fill=(235, 235, 235), font=font)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def histogram(cells: list[int]) -> list[dict]:
    """Return frames per bucket of cell counts (BUCKETS equal buckets from 0 to the max)."""
    width = max(1, math.ceil((max(cells, default=0) + 1) / BUCKETS))
    counts = Counter(n // width for n in cells)
    top = max(counts, default=0)
    return [
        {"cells": f"{b * width:>4}-{(b + 1) * width - 1}", "frames": counts.get(b, 0)}
        for b in range(top + 1)
    ]


def draw(cfg: Figure8Conf, store: Store) -> tuple[bytes, list[dict]]:
    """Return the contact sheet and the cells-per-frame histogram of a clean store."""
    labels, raws = movies_of(store)
    names = sorted(labels)
    picked = [names[i] for i in even_indices(len(names), SHEET_MOVIES)]
    pairs = [(labels[m][0], raws[m][0]) for m in picked]
    cells = [r.meta.get("cells", 0) for frames in labels.values() for r in frames]
    return sheet(store, pairs), histogram(cells)
