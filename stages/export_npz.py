"""export-npz stage: resized images, labels and boxes as deterministic npz shards, one set
per split (`npz/<split>/shard-NNNNN.npz`, in the order of split.names)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from stages.core.config import Aspect, ExportConf
from stages.core.parallel import pmap
from stages.core.selection import even_indices
from stages.core.store import Row, Store, frames_by_clip
from stages.formats.npz import write_npz
from stages.pipeline.entry import run_main, start

log = logging.getLogger("stages.export_npz")


def fit(size: tuple[int, int], out: tuple[int, int], aspect: Aspect):
    """Return (scale_x, scale_y, resized (w, h), offset (x, y)) mapping an image into `out`."""
    (w, h), (ow, oh) = size, out
    if aspect is Aspect.stretch:
        return ow / w, oh / h, (ow, oh), (0, 0)
    s = min(ow / w, oh / h) if aspect is Aspect.pad else max(ow / w, oh / h)
    rw, rh = max(1, round(w * s)), max(1, round(h * s))
    return s, s, (rw, rh), ((ow - rw) // 2, (oh - rh) // 2)


def transform(data: bytes, row: Row, cfg: ExportConf):
    """Decode, resize and place one image and move its boxes the same way (None: undecodable)."""
    out = (cfg.width, cfg.height)
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            sx, sy, rsize, (ox, oy) = fit(im.size, out, cfg.aspect)
            im = im.resize(rsize, Image.Resampling.BILINEAR)
            canvas = Image.new("RGB", out, (cfg.pad_value,) * 3)
            canvas.paste(im, (ox, oy))  # negative offsets crop (aspect=crop)
            arr = np.asarray(canvas, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None  # only possible with clean.decode_check off
    ow, oh = out
    boxes, labels = [], []
    for b in row.boxes:
        x1, y1 = b["x"] * sx + ox, b["y"] * sy + oy
        x2, y2 = (b["x"] + b["w"]) * sx + ox, (b["y"] + b["h"]) * sy + oy
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, ow), min(y2, oh)
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            continue  # cropped away
        boxes.append((x1, y1, x2 - x1, y2 - y1))
        labels.append(b["label"])
    return arr, np.asarray(boxes, np.float32).reshape(-1, 4), labels


def by_split(rows: list[Row], splits: list[str]) -> dict[str, list[Row]]:
    """Return rows per split, in the order of `splits` (a store without splits: "all")."""
    out: dict[str, list[Row]] = {s: [] for s in splits}
    for row in rows:
        out.setdefault(row.split or "all", []).append(row)
    return out


def export_splits(
    store: Store, names: list[str], cfg: ExportConf, out_dir: Path, splits: list[str], video: bool
) -> dict:
    """Write each split's shards under out_dir/<split>/; return totals and per-split metrics."""
    usable = [r for r in store.rows() if r.status == "ok" and r.shard is not None]
    run = export_clips if video else export
    per = {
        split: run(rows, store, names, cfg, out_dir / split)
        for split, rows in by_split(usable, splits).items()
    }
    totals = {
        key: sum(m[key] for m in per.values())
        for key in per[splits[0]]
        if isinstance(per[splits[0]][key], int)
    }
    classes = {n: sum(m["classes"][n] for m in per.values()) for n in names}
    shape = "clip_shape" if video else "image_size"
    return {**totals, shape: per[splits[0]][shape], "classes": classes, "splits": per}


def export(rows: list[Row], store: Store, names: list[str], cfg: ExportConf, out_dir: Path) -> dict:
    """Write npz shards of X, y, multi-hot labels, ragged boxes, classes and ids."""
    ids = {n: i for i, n in enumerate(names)}
    per = cfg.items_per_shard
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = np.array(names, dtype=str)
    counts = dict.fromkeys(names, 0)
    shards, nbytes, skipped = 0, 0, 0
    for first in range(0, len(rows), per):
        chunk = rows[first : first + per]
        pairs = zip(chunk, pmap(lambda r: transform(store.read(r), r, cfg), chunk), strict=True)
        kept = [(r, res) for r, res in pairs if res is not None]
        skipped += len(chunk) - len(kept)
        if not kept:
            continue
        chunk, results = [r for r, _ in kept], [res for _, res in kept]
        n = len(chunk)
        X = np.stack([a for a, _, _ in results])
        y = np.array([r.label_ids[0] if r.label_ids else -1 for r in chunk], np.int64)
        multi = np.zeros((n, len(names)), np.uint8)
        for i, r in enumerate(chunk):
            multi[i, r.label_ids or []] = 1
            for lab in r.labels:
                counts[lab] += 1
        offsets = np.zeros(n + 1, np.int64)
        offsets[1:] = np.cumsum([len(b) for _, b, _ in results])
        boxes = np.concatenate([b for _, b, _ in results])
        box_labels = np.array([ids[lab] for _, _, labs in results for lab in labs], np.int64)
        path = out_dir / f"shard-{shards:05d}.npz"
        write_npz(
            path,
            {
                "X": X,
                "y": y,
                "labels": multi,
                "boxes": boxes.astype(np.float32),
                "box_offsets": offsets,
                "box_labels": box_labels,
                "classes": classes,
                "ids": np.array([r.item_id for r in chunk], dtype=str),
            },
            cfg.compress,
        )
        nbytes += path.stat().st_size
        shards += 1
    return {
        "items": len(rows) - skipped,
        "skipped_undecodable": skipped,
        "shards": shards,
        "bytes": nbytes,
        "image_size": [cfg.height, cfg.width],
        "classes": counts,
    }


def export_clips(
    rows: list[Row], store: Store, names: list[str], cfg: ExportConf, out_dir: Path
) -> dict:
    """Write npz shards of clips: X (N,T,H,W,3) of T evenly spaced frames, y, classes, ids."""
    by_clip = frames_by_clip(rows)
    clips = sorted(by_clip)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(names, 0)
    shards, nbytes, skipped, written = 0, 0, 0, 0
    T = cfg.frames
    for first in range(0, len(clips), cfg.clips_per_shard):
        chunk = clips[first : first + cfg.clips_per_shard]
        picked: list[tuple[Row, list[Row]]] = []
        for clip in chunk:
            frames = by_clip[clip]
            if len(frames) < T:
                skipped += 1  # only with clean.min_frames below export.frames
                continue
            picked.append((frames[0], [frames[i] for i in even_indices(len(frames), T)]))
        flat = [r for _, frames in picked for r in frames]
        done = list(pmap(lambda r: transform(store.read(r), r, cfg), flat))
        arrays, kept = [], []
        for n, (first_frame, _) in enumerate(picked):
            results = done[n * T : (n + 1) * T]
            if any(res is None for res in results):
                skipped += 1
                continue
            arrays.append(np.stack([a for a, _, _ in results]))
            kept.append(first_frame)
        if not kept:
            continue
        for r in kept:
            for lab in r.labels:
                counts[lab] += 1
        path = out_dir / f"shard-{shards:05d}.npz"
        write_npz(
            path,
            {
                "X": np.stack(arrays),
                "y": np.array([r.label_ids[0] if r.label_ids else -1 for r in kept], np.int64),
                "classes": np.array(names, dtype=str),
                "ids": np.array([r.meta["clip"] for r in kept], dtype=str),
            },
            cfg.compress,
        )
        nbytes += path.stat().st_size
        shards += 1
        written += len(kept)
    return {
        "items": written,
        "skipped_short_or_undecodable": skipped,
        "shards": shards,
        "bytes": nbytes,
        "clip_shape": [T, cfg.height, cfg.width, 3],
        "classes": counts,
    }


def main(argv: list[str] | None = None) -> int:
    """Run export-npz for one source."""
    run = start(
        argv,
        "stages.export_npz",
        __doc__,
        extra={"--splits-plot": "items per split and class, for dvc plots"},
    )
    store = Store(run.args.inp)
    splits = run.section("split").names
    if "export-npz" in run.source.own_stages:  # e.g. movies with label images
        metrics = run.source.export_store(
            run.cfg, run.section("export"), splits, store, run.args.out
        )
    else:
        names = run.source.names(run.cfg, store)
        metrics = export_splits(
            store, names, run.section("export"), run.args.out, splits, run.source.video
        )
    run.finish(metrics, per_split={s: m["classes"] for s, m in metrics["splits"].items()})
    log.info(
        "export@%s: %d items in %d shards", run.args.source, metrics["items"], metrics["shards"]
    )
    return 0


if __name__ == "__main__":
    run_main(main)
