"""Quality gates: exact and near duplicates across a source's dataset, classified and checked.

Exact duplicates share their bytes (sha256); near duplicates have perceptual hashes
(imagehash) at most `gates.max_distance` bits apart, found with a faiss multi-index hash over
the binary codes: the codes are cut into m substrings, and by the pigeonhole principle two
codes within r bits agree within r // m bits on at least one substring, so probing each table
with up to r // m flipped bits finds every pair within r (exact, not approximate) while
comparing only the codes that share a bucket. m is chosen by a cost model from the number of
codes and r (`plan`); bench/gates.py checks the pairs against all-pairs numpy.

Each pair is a duplicate (same labels) or a label conflict (different labels), and also
cross-split when its items are in two splits (leakage). Pairs inside one split group (a
clip's frames, a site's burst) are near copies by design and never leak: they are counted
apart unless `gates.within_group`. The gates in conf cap each kind; `gates.dedupe` drops
exact copies, keeping the first by item id, and lists every drop.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stages.core.config import GatesConf, HashKind
from stages.core.errors import StageError
from stages.core.store import Row

CROSS, CONFLICT, DUPLICATE = "cross_split", "label_conflict", "duplicate"
SEVERITY = {CROSS: 0, CONFLICT: 1, DUPLICATE: 2}
GATES = {  # pair kind -> the conf limit on it
    DUPLICATE: "max_duplicates",
    CONFLICT: "max_label_conflicts",
    CROSS: "max_cross_split_duplicates",
}
logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which CPU build it picked
THUMB = 160  # pixels of a thumbnail's longer side on the contact sheet
CAPTION = 30


class GateTripped(StageError):
    """Raise when a gate's count is over its limit (the report is written first)."""


def grey8(image: Image.Image) -> Image.Image:
    """Return an image as 8-bit: deep greys (16-bit, float) stretched over their range."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(image, dtype=np.float64)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return Image.fromarray(((a - lo) * scale).round().astype(np.uint8))
    return image


def code_of(image: Image.Image, cfg: GatesConf) -> bytes:
    """Return an image's perceptual hash as packed bits (hash_size² bits, zero padded)."""
    import imagehash  # imports scipy: only where images are hashed

    fn = {
        HashKind.phash: imagehash.phash,
        HashKind.dhash: imagehash.dhash,
        HashKind.average: imagehash.average_hash,
    }[cfg.hash]
    return np.packbits(fn(grey8(image), hash_size=cfg.hash_size).hash.ravel()).tobytes()


def plan(n: int, bits: int, radius: int) -> tuple[int, int, int]:
    """Return (tables, bits per table, flips) for a multi-index hash finding all pairs within
    `radius` among n codes of `bits` bits, at the lowest estimated cost."""
    best = None
    for m in range(1, bits + 1):
        b = min(bits // m, 64)
        flips = radius // m
        if b < 1 or flips > b:
            continue
        probes = sum(math.comb(b, k) for k in range(flips + 1))
        cost = m * probes * (1 + n / 2**b)  # lookups plus candidates compared
        if best is None or cost < best[0]:
            best = (cost, m, b, flips)
    assert best is not None
    return best[1], best[2], best[3]


def near_pairs(codes: np.ndarray, radius: int) -> np.ndarray:
    """Return every pair (i, j, distance), i < j, of codes (n, bytes) within `radius` bits,
    sorted."""
    import faiss

    n = len(codes)
    if n < 2:
        return np.zeros((0, 3), np.int64)
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    bits = codes.shape[1] * 8
    tables, width, flips = plan(n, bits, radius)
    index = faiss.IndexBinaryMultiHash(bits, tables, width)
    index.nflip = flips
    index.add(codes)
    lims, dist, found = index.range_search(codes, radius + 1)  # faiss keeps distances < radius
    query = np.repeat(np.arange(n, dtype=np.int64), np.diff(lims.astype(np.int64)))
    found = found.astype(np.int64)
    keep = query < found
    out = np.stack([query[keep], found[keep], dist[keep].astype(np.int64)], axis=1)
    return out[np.lexsort((out[:, 1], out[:, 0]))]


@dataclass(frozen=True)
class Pair:
    """Two items that are copies: exact (same bytes) or near (hashes within the distance)."""

    a: Row
    b: Row
    exact: bool
    distance: int
    kinds: tuple[str, ...]
    action: str = ""

    def key(self) -> tuple:
        """Return the sort key: worst kind first, exact before near, closest, then ids."""
        return (
            min(SEVERITY[k] for k in self.kinds),
            not self.exact,
            self.distance,
            self.a.item_id,
            self.b.item_id,
        )


def kinds_of(a: Row, b: Row) -> tuple[str, ...]:
    """Return what a pair of copies is: a duplicate or a label conflict, and maybe leakage."""
    out = [DUPLICATE if sorted(a.labels) == sorted(b.labels) else CONFLICT]
    if a.split != b.split:
        out.insert(0, CROSS)
    return tuple(out)


def dedupe(rows: list[Row], digests: Sequence[str]) -> tuple[list[Row], list[Pair]]:
    """Drop exact copies, keeping the first by item id; return the rows left and the drops."""
    first: dict[str, Row] = {}
    order = sorted(range(len(rows)), key=lambda i: rows[i].item_id)
    dropped: dict[int, Pair] = {}
    for i in order:
        kept = first.setdefault(digests[i], rows[i])
        if kept is not rows[i]:
            dropped[i] = Pair(kept, rows[i], True, 0, kinds_of(kept, rows[i]), "dropped b")
    left = [r for i, r in enumerate(rows) if i not in dropped]
    return left, sorted(dropped.values(), key=Pair.key)


def find(
    rows: list[Row],
    codes: Sequence[bytes],
    digests: Sequence[str],
    groups: Sequence[str],
    cfg: GatesConf,
) -> tuple[list[Pair], int]:
    """Return the copies among rows, worst first, and how many pairs within one split group
    were set aside (with gates.within_group off)."""
    found: dict[tuple[int, int], tuple[bool, int]] = {}
    by_digest: dict[str, list[int]] = {}
    for i, digest in enumerate(digests):
        by_digest.setdefault(digest, []).append(i)
    for same in by_digest.values():  # exact copies, whatever their hashes say
        for x, i in enumerate(same):
            for j in same[x + 1 :]:
                found[(i, j)] = (True, 0)
    if rows:
        matrix = np.frombuffer(b"".join(codes), np.uint8).reshape(len(rows), -1)
        for i, j, d in near_pairs(matrix, cfg.max_distance).tolist():
            found.setdefault((i, j), (False, d))
    pairs, skipped = [], 0
    for (i, j), (exact, d) in found.items():
        if groups[i] == groups[j] and not cfg.within_group:
            skipped += 1
            continue
        a, b = sorted((rows[i], rows[j]), key=lambda r: r.item_id)
        pairs.append(Pair(a, b, exact, d, kinds_of(a, b)))
    return sorted(pairs, key=Pair.key), skipped


def summary(pairs: list[Pair], drops: list[Pair], skipped: int, cfg: GatesConf) -> dict:
    """Return the gate metrics: pairs per kind (exact and near), drops, what tripped."""
    counts = {k: {"exact": 0, "near": 0} for k in GATES}
    for p in pairs:
        for kind in p.kinds:
            counts[kind]["exact" if p.exact else "near"] += 1
    totals = {k: c["exact"] + c["near"] for k, c in counts.items()}
    tripped = [
        {"gate": GATES[k], "count": totals[k], "limit": getattr(cfg, GATES[k])}
        for k in (CROSS, CONFLICT, DUPLICATE)
        if getattr(cfg, GATES[k]) is not None and totals[k] > getattr(cfg, GATES[k])
    ]
    return {
        "pairs": counts,
        "totals": totals,
        "pairs_within_group": skipped,
        "dropped_exact_duplicates": len(drops),
        "max_distance": cfg.max_distance,
        "tripped": tripped,
    }


def message(source: str, metrics: dict) -> str:
    """Return the one-line summary of tripped gates."""
    parts = [f"{t['count']} pairs > {t['gate']} {t['limit']}" for t in metrics["tripped"]]
    return (
        f"{source}: quality gates failed: {'; '.join(parts)} (see the report: plots/gates.csv "
        "and the contact sheet plots/gates.png)"
    )


COLUMNS = [
    "kind",
    "match",
    "distance",
    "action",
    *(f"{side}_{f}" for side in "ab" for f in ("item", "source_id", "labels", "split")),
]


def report_csv(pairs: list[Pair], drops: list[Pair], cfg: GatesConf) -> str:
    """Return the report CSV: every drop, then the pairs worst first (report_max_pairs)."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(COLUMNS)
    for p in [*drops, *pairs[: cfg.report_max_pairs]]:
        sides = [
            v
            for r in (p.a, p.b)
            for v in (r.item_id, r.source_id, ";".join(sorted(r.labels)), r.split or "")
        ]
        out.writerow(
            ["+".join(p.kinds), "exact" if p.exact else "near", p.distance, p.action, *sides]
        )
    return buf.getvalue()


def thumbnail(data: bytes) -> Image.Image:
    """Return an image scaled to fit THUMB pixels, as RGB."""
    with Image.open(io.BytesIO(data)) as im:
        im = grey8(im).convert("RGB")
        im.thumbnail((THUMB, THUMB), Image.Resampling.BILINEAR)
        return im


def sheet(pairs: list[Pair], read: Callable[[Row], bytes], n: int) -> bytes:
    """Return a PNG of the first n pairs side by side, each captioned with ids, labels and
    splits (a note when there are none)."""
    shown = pairs[:n]
    width = 2 * THUMB + 12
    canvas = Image.new("RGB", (width, max(1, len(shown)) * (THUMB + CAPTION)), (32, 32, 32))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=10)
    if not shown:
        draw.text((8, 8), "no duplicate pairs", fill=(235, 235, 235), font=font)
    for k, p in enumerate(shown):
        y = k * (THUMB + CAPTION)
        for side, row in enumerate((p.a, p.b)):
            x = side * (THUMB + 12)
            canvas.paste(thumbnail(read(row)), (x, y))
            text = f"{row.item_id[-28:]}\n{','.join(row.labels) or '-'} [{row.split or '-'}]"
            draw.text((x + 2, y + THUMB + 2), text, fill=(235, 235, 235), font=font)
        tag = f"{'+'.join(p.kinds)} {'exact' if p.exact else f'd={p.distance}'}"
        draw.text((THUMB - 40, y + 2), tag, fill=(255, 200, 60), font=font)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()
