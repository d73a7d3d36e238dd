"""Galleries: contact sheets of items with their boxes drawn and labels written.

clean-annotations draws a seeded few items per class (a DVC plot image, so `dvc plots diff`
shows the data itself across revisions); `stages.diff --gallery` draws a diff's items the
same way. Equal inputs give equal PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable

from PIL import Image, ImageDraw, ImageFont

from stages.core.boxes import finite, scale_of
from stages.core.gates import rgb_of
from stages.core.selection import ranker
from stages.core.store import Row

THUMB = 128  # pixels of a thumbnail's longer side
COLUMNS = 6
CAPTION = 26
HEADER = 16
WHITE = (255, 255, 255)
PALETTE = [(255, 80, 80), (80, 200, 255), (255, 210, 60), (120, 255, 120), (230, 120, 255)]


def sample(rows: Iterable[Row], classes: list[str], per_class: int, seed: int) -> list[tuple]:
    """Return (class, rows) for each class: its first `per_class` items by a seeded rank."""
    rank = ranker(seed)
    ordered = sorted(rows, key=lambda r: rank(r.item_id))
    return [(c, [r for r in ordered if c in r.labels][:per_class]) for c in classes]


def tile(data: bytes | None, row: Row, colours: dict[str, tuple]) -> Image.Image:
    """Return one item's thumbnail with its boxes drawn (a grey square if unreadable)."""
    try:
        im = rgb_of(data or b"")
    except Exception:  # a payload gone or damaged: drawn as missing, never a crash
        return Image.new("RGB", (THUMB, THUMB), (90, 90, 90))
    sx, sy = scale_of(row, im.width, im.height)  # boxes may be in other units (normalised)
    scale = THUMB / max(im.size)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
    draw = ImageDraw.Draw(im)
    for box in row.boxes:
        if not finite(box):
            continue
        xs = sorted(((box["x"]) * sx * scale, (box["x"] + box["w"]) * sx * scale))
        ys = sorted(((box["y"]) * sy * scale, (box["y"] + box["h"]) * sy * scale))
        draw.rectangle((xs[0], ys[0], xs[1], ys[1]), outline=colours.get(box.get("label"), WHITE))
    return im


def draw(
    sections: list[tuple[str, list[Row]]],
    read: Callable[[Row], bytes | None],
    captions: Callable[[Row], str] | None = None,
) -> bytes:
    """Return a PNG: one titled band per section, its items in rows of COLUMNS."""
    names = sorted({str(b.get("label")) for _, rows in sections for r in rows for b in r.boxes})
    colours = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    caption = captions or (lambda r: f"{r.item_id[-22:]}\n{','.join(r.labels) or '-'}")
    heights = [
        HEADER + max(1, -(-len(rows) // COLUMNS)) * (THUMB + CAPTION) for _, rows in sections
    ]
    canvas = Image.new("RGB", (COLUMNS * THUMB, max(HEADER, sum(heights))), (28, 28, 28))
    pen = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=10)
    y = 0
    for (title, rows), height in zip(sections, heights, strict=True):
        pen.text((4, y + 2), f"{title} ({len(rows)})", fill=(255, 220, 120), font=font)
        for k, row in enumerate(rows):
            r, c = divmod(k, COLUMNS)
            x, top = c * THUMB, y + HEADER + r * (THUMB + CAPTION)
            try:
                data = read(row)
            except Exception:  # a payload gone: a grey tile, never a failed stage
                data = None
            canvas.paste(tile(data, row, colours), (x, top))
            pen.text((x + 2, top + THUMB + 1), caption(row), fill=(230, 230, 230), font=font)
        y += height
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()
