"""The one rule that turns a box into pixels, shared by clean-annotations and the exports.

A box is stored as top-left `x, y` and size `w, h`: in pixels of the image it was drawn on,
or normalised to [0, 1] of the frame (`meta.box_units == "normalized"`, Tator). Its four
edges are scaled to the image actually received, each rounded to the nearest pixel edge
(halves up: floor(v + 0.5)), then clamped into [0, width] x [0, height]. The result
`x0 <= x1, y0 <= y1` are integer pixel edges: the box covers pixel columns x0 .. x1 - 1.
Exports write them as COCO `[x0, y0, x1 - x0, y1 - y0]` and as Pascal VOC's 1-based
inclusive `xmin = x0 + 1, ymin = y0 + 1, xmax = x1, ymax = y1`.
"""

from __future__ import annotations

import math


def snap(value: float) -> int:
    """Round to the nearest integer, halves up (never Python's round-half-even)."""
    return math.floor(value + 0.5)


def pixel_edges(
    box: dict, scale_x: float, scale_y: float, width: int, height: int
) -> tuple[tuple[int, int, int, int], bool]:
    """Return a box's edges in a width x height image, and whether clamping moved one."""
    raw = (
        snap(box["x"] * scale_x),
        snap(box["y"] * scale_y),
        snap((box["x"] + box["w"]) * scale_x),
        snap((box["y"] + box["h"]) * scale_y),
    )
    x0, y0, x1, y1 = raw
    clamped = (
        min(max(x0, 0), width),
        min(max(y0, 0), height),
        min(max(x1, 0), width),
        min(max(y1, 0), height),
    )
    return clamped, clamped != raw


def scale_of(row, width: int, height: int) -> tuple[float, float]:
    """Return the factors from a row's box units to pixels of a width x height image."""
    if row.meta.get("box_units") == "normalized":
        return float(width), float(height)
    sx = width / row.width if row.width else 1.0
    sy = height / row.height if row.height else 1.0
    return sx, sy


def edges(box: dict) -> tuple[int, int, int, int]:
    """Return a clean box's pixel edges (x0, y0, x1, y1)."""
    return snap(box["x"]), snap(box["y"]), snap(box["x"] + box["w"]), snap(box["y"] + box["h"])


def voc_box(box: dict) -> tuple[int, int, int, int]:
    """Return a clean box as Pascal VOC's 1-based inclusive (xmin, ymin, xmax, ymax)."""
    x0, y0, x1, y1 = edges(box)
    return x0 + 1, y0 + 1, x1, y1


def coco_box(box: dict) -> list[int]:
    """Return a clean box as COCO's [x, y, width, height] in pixels (0-based edges)."""
    x0, y0, x1, y1 = edges(box)
    return [x0, y0, x1 - x0, y1 - y0]


def finite(box: dict) -> bool:
    """Tell whether a box's four numbers are finite (no NaN or infinity)."""
    return all(math.isfinite(box[k]) for k in ("x", "y", "w", "h"))
