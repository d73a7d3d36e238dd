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

import imagehash
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
FLAT = b""  # the code of a picture too flat to hash: every blank frame would match every other
FLAT_STD = 2.0  # grey levels: the spread of a 32x32 thumbnail below which a picture is flat
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
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


def rgb_of(data: bytes) -> Image.Image:
    """Return an image file's pixels as 8-bit RGB (deep greys stretched, see grey8)."""
    with Image.open(io.BytesIO(data)) as im:
        return grey8(im).convert("RGB")


def code_of(image: Image.Image, cfg: GatesConf) -> bytes:
    """Return an image's perceptual hash as packed bits (hash_size² bits, zero padded), or
    FLAT for a picture with no structure to hash (blank, black, one colour)."""
    image = grey8(image)
    small = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.BILINEAR))
    if small.std() < FLAT_STD:
        return FLAT
    fn = {
        HashKind.phash: imagehash.phash,
        HashKind.dhash: imagehash.dhash,
        HashKind.average: imagehash.average_hash,
    }[cfg.hash]
    return np.packbits(fn(image, hash_size=cfg.hash_size).hash.ravel()).tobytes()


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


def near_pairs(
    codes: np.ndarray,
    radius: int,
    same: np.ndarray | None = None,
    unless: np.ndarray | None = None,
    chunk: int = 1 << 15,
) -> tuple[np.ndarray, int]:
    """Return every pair (i, j, distance), i < j, of codes (n, bytes) within `radius` bits,
    sorted, and how many were set aside because `same` (e.g. a group id) is equal for both,
    unless `unless` (e.g. a digest id) is equal for both too.

    Queries go in chunks, and set-aside pairs are dropped per chunk, so memory follows the
    pairs kept, not a clip's thousands of near-identical frames."""
    import faiss

    n = len(codes)
    if n < 2:
        return np.zeros((0, 3), np.int64), 0
    nbytes = codes.shape[1]
    # faiss reads a whole 8-byte word at a table's offset: spare bytes after the last code.
    flat = np.zeros(n * nbytes + 8, np.uint8)
    flat[: n * nbytes] = np.asarray(codes, dtype=np.uint8).ravel()
    padded = flat[: n * nbytes].reshape(n, nbytes)
    tables, width, flips = plan(n, nbytes * 8, radius)
    index = faiss.IndexBinaryMultiHash(nbytes * 8, tables, width)
    index.nflip = flips
    index.add(padded)
    out, skipped = [], 0
    for start in range(0, n, chunk):
        # faiss keeps distances < radius: ask for radius + 1.
        lims, dist, found = index.range_search(padded[start : start + chunk], radius + 1)
        query = start + np.repeat(
            np.arange(len(lims) - 1, dtype=np.int64), np.diff(lims.astype(np.int64))
        )
        found = found.astype(np.int64)
        keep = query < found
        if same is not None:
            inside = same[query] == same[found]
            if unless is not None:
                inside &= unless[query] != unless[found]
            skipped += int(np.count_nonzero(keep & inside))
            keep &= ~inside
        out.append(np.stack([query[keep], found[keep], dist[keep].astype(np.int64)], axis=1))
    pairs = np.concatenate(out)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))], skipped


@dataclass(frozen=True)
class Pair:
    """Two items that are copies: exact (same bytes) or near (hashes within the distance)."""

    a: Row
    b: Row
    exact: bool
    distance: int
    kinds: tuple[str, ...]
    action: str = ""


def kinds_of(a: Row, b: Row) -> tuple[str, ...]:
    """Return what a pair of copies is: a duplicate or a label conflict, and maybe leakage."""
    out = [DUPLICATE if sorted(a.labels) == sorted(b.labels) else CONFLICT]
    if a.split != b.split:
        out.insert(0, CROSS)
    return tuple(out)


def dedupe(rows: list[Row], digests: Sequence[str]) -> tuple[list[Row], list[Pair]]:
    """Drop exact copies with the same labels, keeping the first by item id; return the rows
    left and the drops. Copies labelled differently stay: they are label conflicts."""
    first: dict[tuple, Row] = {}
    dropped: dict[int, Pair] = {}
    for i in sorted(range(len(rows)), key=lambda i: rows[i].item_id):
        kept = first.setdefault((digests[i], *sorted(rows[i].labels)), rows[i])
        if kept is not rows[i]:
            dropped[i] = Pair(kept, rows[i], True, 0, kinds_of(kept, rows[i]), "dropped b")
    left = [r for i, r in enumerate(rows) if i not in dropped]
    return left, sorted(dropped.values(), key=lambda p: (p.b.item_id, p.a.item_id))


def ids(values: Sequence) -> np.ndarray:
    """Return a small integer per distinct value."""
    seen: dict = {}
    return np.array([seen.setdefault(v, len(seen)) for v in values], np.int64)


@dataclass
class Found:
    """Copies found: counts per kind, and the worst pairs (up to the report's needs)."""

    pairs: list[Pair]
    counts: dict[str, dict[str, int]]
    within_group: int  # near copies inside one split group, set aside
    flat: int  # pictures with no structure to hash: matched by bytes only
    unhashable: int  # pictures the hash could not read: matched by bytes only


def exact_pairs(digest: np.ndarray) -> np.ndarray:
    """Return every pair (i, j), i < j, of rows with equal digests."""
    order = np.argsort(digest, kind="stable")
    bounds = np.flatnonzero(np.diff(digest[order])) + 1
    out = [np.zeros((0, 2), np.int64)]
    for members in np.split(order, bounds):
        if len(members) > 1:
            a, b = np.triu_indices(len(members), 1)
            out.append(np.sort(np.stack([members[a], members[b]], axis=1), axis=1))
    return np.concatenate(out)


def find(
    rows: list[Row],
    codes: Sequence[bytes | None],
    digests: Sequence[str],
    groups: Sequence[str],
    cfg: GatesConf,
    keep: int,
) -> Found:
    """Return the copies among rows: exact ones always, near ones outside a shared split
    group (unless gates.within_group), counted per kind, the worst `keep` as pairs."""
    n = len(rows)
    digest, group = ids(digests), ids(groups)
    split, labels = ids([r.split for r in rows]), ids([tuple(sorted(r.labels)) for r in rows])
    hashed = np.array([i for i, c in enumerate(codes) if c], np.int64)
    flat = sum(1 for c in codes if c == FLAT)
    near, skipped = np.zeros((0, 3), np.int64), 0
    if len(hashed) > 1:
        matrix = np.frombuffer(b"".join(codes[i] for i in hashed), np.uint8).reshape(
            len(hashed), -1
        )
        same = None if cfg.within_group else group[hashed]
        # Exact copies in a group count: only near ones are set aside.
        near, skipped = near_pairs(matrix, cfg.max_distance, same, digest[hashed])
        near[:, :2] = hashed[near[:, :2]]
    exact = exact_pairs(digest)
    i = np.concatenate([exact[:, 0], near[:, 0]])
    j = np.concatenate([exact[:, 1], near[:, 1]])
    dist = np.concatenate([np.zeros(len(exact), np.int64), near[:, 2]])
    is_exact = np.concatenate([np.ones(len(exact), bool), np.zeros(len(near), bool)])
    _, first = np.unique(i * max(n, 1) + j, return_index=True)  # exact ones come first
    i, j, dist, is_exact = i[first], j[first], dist[first], is_exact[first]
    is_exact |= digest[i] == digest[j]
    cross = split[i] != split[j]
    conflict = labels[i] != labels[j]
    counts = {
        kind: {
            "exact": int(np.count_nonzero(mask & is_exact)),
            "near": int(np.count_nonzero(mask & ~is_exact)),
        }
        for kind, mask in ((DUPLICATE, ~conflict), (CONFLICT, conflict), (CROSS, cross))
    }
    rank = np.empty(n, np.int64)
    rank[sorted(range(n), key=lambda k: rows[k].item_id)] = np.arange(n)
    a, b = np.where(rank[i] < rank[j], i, j), np.where(rank[i] < rank[j], j, i)
    severity = np.where(cross, 0, np.where(conflict, 1, 2))
    order = np.lexsort((rank[b], rank[a], dist, ~is_exact, severity))[:keep]
    pairs = [
        Pair(
            rows[a[k]],
            rows[b[k]],
            bool(is_exact[k]),
            int(dist[k]),
            kinds_of(rows[a[k]], rows[b[k]]),
        )
        for k in order.tolist()
    ]
    unhashable = sum(1 for c in codes if c is None)
    return Found(pairs, counts, skipped, flat, unhashable)


def summary(found: Found, drops: list[Pair], cfg: GatesConf) -> dict:
    """Return the gate metrics: pairs per kind (exact and near), drops, what tripped."""
    totals = {k: c["exact"] + c["near"] for k, c in found.counts.items()}
    tripped = [
        {"gate": GATES[k], "count": totals[k], "limit": getattr(cfg, GATES[k])}
        for k in (CROSS, CONFLICT, DUPLICATE)
        if getattr(cfg, GATES[k]) is not None and totals[k] > getattr(cfg, GATES[k])
    ]
    return {
        "pairs": found.counts,
        "totals": totals,
        "pairs_within_group": found.within_group,
        "flat_images": found.flat,
        "unhashable_images": found.unhashable,
        "dropped_exact_duplicates": len(drops),
        "max_distance": cfg.max_distance,
        "tripped": tripped,
    }


@dataclass
class Gate:
    """What the quality gates found: copies worst first, and the exact copies dropped."""

    pairs: list[Pair]
    drops: list[Pair]
    metrics: dict


def judge(
    rows: list[Row],
    hashed: list[tuple[bytes | None, str]],
    groups: list[str],
    cfg: GatesConf,
    drops: list[Pair],
) -> Gate:
    """Find the copies among rows from their (perceptual hash, sha256), and sum them up."""
    codes, digests = [c for c, _ in hashed], [d for _, d in hashed]
    found = find(rows, codes, digests, groups, cfg, max(cfg.report_max_pairs, cfg.sheet_pairs))
    return Gate(found.pairs, drops, summary(found, drops, cfg))


def message(source: str, metrics: dict, report: str = "plots/gates.csv") -> str:
    """Return the one-line summary of tripped gates, naming where this run's report is."""
    parts = [f"{t['count']} pairs > {t['gate']} {t['limit']}" for t in metrics["tripped"]]
    return f"{source}: quality gates failed: {'; '.join(parts)} (see the report {report})"


COLUMNS = [
    "kind",
    "match",
    "distance",
    "action",
    *(f"{side}_{f}" for side in "ab" for f in ("item", "source_id", "labels", "split")),
]


def report_csv(pairs: list[Pair], drops: list[Pair]) -> str:
    """Return the report CSV: every drop, then the pairs (worst first)."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(COLUMNS)
    for p in [*drops, *pairs]:
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
    im = rgb_of(data)
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
