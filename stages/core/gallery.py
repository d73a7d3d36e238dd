"""Galleries: contact sheets of items with their boxes drawn and labels written.

clean-annotations draws a seeded few items per class (a DVC plot image, so `dvc plots diff`
shows the data itself across revisions); `stages.diff --gallery` draws a diff's items the
same way. Every caption fits its cell: labels wrap onto as many lines as they need, an id too
long for one line keeps its start and its end (where the frame number is), and each band's
captions are as tall as its tallest. Equal inputs give equal PNG bytes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from stages.core.boxes import finite, scale_of
from stages.core.gates import rgb_of
from stages.core.selection import ranker
from stages.core.store import Row

THUMB = 128  # pixels of a thumbnail's longer side
COLUMNS = 6
HEADER = 16
MARGIN = 2  # pixels between a caption and its cell's edges
ELLIPSIS = "…"
WHITE = (255, 255, 255)
PALETTE = [(255, 80, 80), (80, 200, 255), (255, 210, 60), (120, 255, 120), (230, 120, 255)]

Caption = Callable[[Row], tuple[str, str]]


@dataclass(frozen=True)
class Cell:
    """One item's place on the sheet: its thumbnail's corner and its caption's lines."""

    row: Row
    x: int
    y: int
    lines: list[tuple[int, int, str]]  # (x, y, text) of each caption line


@dataclass(frozen=True)
class Band:
    """One titled section: where it starts, how tall it is and its cells."""

    title: str
    top: int
    height: int
    caption: int  # pixels under each thumbnail, from the band's tallest caption
    cells: list[Cell]


def font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Return the captions' font."""
    return ImageFont.load_default(size=10)


def measure(pen_font, text: str) -> float:
    """Return the pixels `text` takes: its advance or its ink, whichever reaches further."""
    return max(pen_font.getlength(text), pen_font.getbbox(text)[2]) if text else 0.0


def shorten(text: str, width: float, pen_font) -> str:
    """Return `text`, or its start and end joined by an ellipsis, fitting `width` pixels."""
    if measure(pen_font, text) <= width:
        return text

    def cut(k: int) -> str:
        tail = k - k // 2  # the end gets the odd character: it tells frames apart
        return text[: k // 2] + ELLIPSIS + text[len(text) - tail :]

    lo, hi = 0, len(text) - 1  # characters kept: the largest count that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if measure(pen_font, cut(mid)) <= width else (lo, mid - 1)
    return cut(lo)


def wrap(text: str, width: float, pen_font) -> list[str]:
    """Return `text` in lines of at most `width` pixels, broken after spaces and commas
    (inside a word only when the word alone is wider)."""
    lines, line = [], ""
    for token in (t for t in re.findall(r"[^,\s]*[,\s]*", text) if t):
        candidate = line + token
        if line and measure(pen_font, candidate.rstrip()) > width:
            lines.append(line.rstrip())
            candidate = token
        while measure(pen_font, candidate.rstrip()) > width:
            k = max(1, max_prefix(candidate, width, pen_font))
            lines.append(candidate[:k])
            candidate = candidate[k:]
        line = candidate
    if line.strip():
        lines.append(line.rstrip())
    return lines or [""]


def max_prefix(text: str, width: float, pen_font) -> int:
    """Return the length of the longest prefix of `text` within `width` pixels."""
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if measure(pen_font, text[:mid]) <= width else (lo, mid - 1)
    return lo


def caption_lines(item_id: str, labels: str, pen_font, width: int = THUMB) -> list[str]:
    """Return a cell's caption: its id on one line (shortened in the middle), then its labels
    wrapped."""
    inner = width - 2 * MARGIN
    return [shorten(item_id, inner, pen_font), *wrap(labels, inner, pen_font)]


def default_caption(row: Row) -> tuple[str, str]:
    """Return an item's id and its labels."""
    return row.item_id, ", ".join(row.labels) or "-"


def layout(sections: list[tuple[str, list[Row]]], captions: Caption, pen_font) -> list[Band]:
    """Return the bands of a sheet: cells in rows of COLUMNS, captions fitted to them."""
    ascent, descent = pen_font.getmetrics()
    line_height = ascent + descent
    bands, top = [], 0
    for title, rows in sections:
        texts = [caption_lines(*captions(r), pen_font) for r in rows]
        caption = 2 * MARGIN + line_height * max((len(t) for t in texts), default=1)
        pitch = THUMB + caption
        cells = []
        for k, (row, lines) in enumerate(zip(rows, texts, strict=True)):
            r, c = divmod(k, COLUMNS)
            x, y = c * THUMB, top + HEADER + r * pitch
            cells.append(Cell(row, x, y, [
                (x + MARGIN, y + THUMB + MARGIN + i * line_height, s) for i, s in enumerate(lines)
            ]))  # fmt: skip
        height = HEADER + max(1, -(-len(rows) // COLUMNS)) * pitch
        heading = shorten(f"{title} ({len(rows)})", COLUMNS * THUMB - 8, pen_font)
        bands.append(Band(heading, top, height, caption, cells))
        top += height
    return bands


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
    captions: Caption | None = None,
) -> bytes:
    """Return a PNG: one titled band per section, its items in rows of COLUMNS."""
    names = sorted({str(b.get("label")) for _, rows in sections for r in rows for b in r.boxes})
    colours = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    pen_font = font()
    bands = layout(sections, captions or default_caption, pen_font)
    height = sum(b.height for b in bands)
    canvas = Image.new("RGB", (COLUMNS * THUMB, max(HEADER, height)), (28, 28, 28))
    pen = ImageDraw.Draw(canvas)
    for band in bands:
        pen.text((4, band.top + 2), band.title, fill=(255, 220, 120), font=pen_font)
        for cell in band.cells:
            try:
                data = read(cell.row)
            except Exception:  # a payload gone: a grey tile, never a failed stage
                data = None
            canvas.paste(tile(data, cell.row, colours), (cell.x, cell.y))
            for x, y, text in cell.lines:
                pen.text((x, y), text, fill=(230, 230, 230), font=pen_font)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()
