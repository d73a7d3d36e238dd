"""clean-annotations@figure8: every label frame cleaned (`labels.py`); raw frames pass through.

Cleaned label frames are new payloads in this stage's shards; raw frames stay in the
extract-frames shards (the manifest points there). Each label frame's meta records its cell
count and what cleaning changed; movies extract-frames could not make are dropped and counted.
"""

from __future__ import annotations

import io
import statistics
from collections import Counter
from pathlib import Path

from stages.core.errors import StoreError
from stages.core.parallel import default_workers, pmap, progress
from stages.core.store import Row, ShardWriter, Store, member_name, rebase, write_manifest
from stages.formats.images import decode_array, encode_array
from stages.sources.figure8 import Figure8Clean, Figure8Conf
from stages.sources.figure8.labels import clean_labels
from stages.sources.figure8.movies import Ref, ref


def clean_one(job: tuple[Ref, Figure8Clean]) -> tuple[bytes, str, dict]:
    """Clean one label frame (in a worker process); return its image and counts."""
    where, cfg = job
    try:
        labels = decode_array(where.read())
    except (OSError, ValueError) as exc:  # written by extract-frames: damage is the store's
        raise StoreError(f"{where.path}: undecodable label frame ({exc}): run it again") from None
    done = clean_labels(labels, cfg.hole_max, cfg.object_max, cfg.connectivity)
    data, ext = encode_array(done.labels)
    counts = {
        "cells": done.cells,
        "holes_filled": done.holes_filled,
        "hole_pixels": done.hole_pixels,
        "objects_removed": done.objects_removed,
    }
    return data, ext, counts


def spread(values: list[int]) -> dict:
    """Return min, median, mean and max of some counts (zeros when there are none)."""
    if not values:
        return {"min": 0, "median": 0, "mean": 0.0, "max": 0}
    return {
        "min": min(values),
        "median": statistics.median(values),
        "mean": round(statistics.fmean(values), 3),
        "max": max(values),
    }


def clean_store(
    cfg: Figure8Conf, store: Store, out_dir: Path, shard_bytes: int, workers: int | None = None
) -> tuple[list[Row], dict]:
    """Write the cleaned store; return its rows and metrics."""
    rows = store.rows()
    labels = [r for r in rows if r.status == "ok" and r.meta.get("role") == "annotated"]
    raws = [r for r in rows if r.status == "ok" and r.meta.get("role") == "raw"]
    dropped = Counter(f"movie_{r.status}" for r in rows if r.status != "ok")
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(out_dir, shard_bytes)
    totals: Counter = Counter()
    cells = []
    workers = workers or default_workers()
    try:
        jobs = [(ref(store, r), cfg.clean) for r in labels]
        done = pmap(clean_one, jobs, kind="process", workers=workers, window=4 * workers)
        bar = progress(done, total=len(jobs), desc="clean@figure8", unit="frame")
        for row, (data, ext, counts) in zip(labels, bar, strict=True):
            row.shard, row.offset = writer.add(
                member_name(row.item_id, ext), io.BytesIO(data), len(data)
            )
            row.bytes, row.sha256 = len(data), None
            row.meta = {**row.meta, **counts, "ext": ext}
            totals.update(counts)
            cells.append(counts["cells"])
        writer.close()
    except BaseException:
        writer.abort()
        raise
    kept = labels + rebase(raws, store.root, out_dir)
    write_manifest(out_dir, kept, list(cfg.classes))
    movies = {r.meta["movie"] for r in labels}
    metrics = {
        "items_in": len(rows),
        "items_out": len(kept),
        "movies": len(movies),
        "clips_out": len(movies),  # movies are this source's clips
        "frames": len(labels),
        "dropped": dict(sorted(dropped.items())),
        "cells_total": totals["cells"],
        "cells_per_frame": spread(cells),
        "holes_filled": totals["holes_filled"],
        "hole_pixels": totals["hole_pixels"],
        "objects_removed": totals["objects_removed"],
        "settings": {
            "hole_max": cfg.clean.hole_max,
            "object_max": cfg.clean.object_max,
            "connectivity": cfg.clean.connectivity,
        },
        "classes": {cfg.classes[0]: len(movies)},
    }
    return kept, metrics
