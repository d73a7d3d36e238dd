"""clean-annotations@figure8: every label frame cleaned (`labels.py`); raw frames pass through.

Each frame is cleaned on its own; then a movie's frames are renumbered 1..N together, so a
cell keeps one label through the movie. Cleaned label frames are new payloads in this stage's
shards; raw frames stay in the extract-frames shards (the manifest points there). Each label
frame's meta records its cell count and what cleaning changed; movies extract-frames could
not make stay in the manifest without payload (so export knows their ids) and are counted.
"""

from __future__ import annotations

import io
import shutil
import statistics
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from stages.core.config import SplitConf
from stages.core.errors import StoreError
from stages.core.executor import Executor, LocalExecutor
from stages.core.files import spool, unspool
from stages.core.parallel import progress
from stages.core.splits import assign_rows
from stages.core.store import (
    Row,
    ShardWriter,
    Store,
    frames_by_clip,
    member_name,
    rebase,
    write_manifest,
)
from stages.formats.images import decode_array, encode_array
from stages.sources.figure8 import Figure8Clean, Figure8Conf
from stages.sources.figure8.labels import clean_movie_labels
from stages.sources.figure8.movies import SPOOL, Ref, ref

if TYPE_CHECKING:
    from stages.sources import Source


def clean_movie(job: tuple[list[Ref], Figure8Clean]) -> list[tuple[bytes, str, dict]]:
    """Clean one movie's label frames (in a worker process), renumbering them together;
    return each frame's image and counts."""
    where, cfg = job
    frames = []
    for ref_ in where:
        try:
            frames.append(decode_array(ref_.read()))
        except Exception as exc:  # written by extract-frames: damage is the store's
            raise StoreError(
                f"{ref_.path}: undecodable label frame ({exc}): run it again"
            ) from None
    movie, done = clean_movie_labels(frames, cfg.hole_max, cfg.object_max, cfg.connectivity)
    out = []
    for frame, d in zip(movie, done, strict=True):
        counts = {
            "cells": d.cells,
            "holes_filled": d.holes_filled,
            "hole_pixels": d.hole_pixels,
            "objects_removed": d.objects_removed,
        }
        out.append((*encode_array(frame), counts))
    return out


def movies_of(store: Store) -> tuple[dict[str, list[Row]], dict[str, list[Row]]]:
    """Return a clean store's label frames and raw frames, each by movie in frame order."""
    rows = [r for r in store.rows() if r.status == "ok" and r.shard is not None]
    labels = frames_by_clip(r for r in rows if r.meta.get("role") == "annotated")
    raws = frames_by_clip(r for r in rows if r.meta.get("role") == "raw")
    return labels, raws


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


def clean_spooled(job: tuple[list[Ref], Figure8Clean, str]) -> tuple[list, list[int]]:
    """Clean one movie (a task) into a spool file in the output dir; return each frame's
    (ext, counts) and the images' sizes (small: never the images)."""
    where, cfg, path = job
    frames = clean_movie((where, cfg))
    return [(ext, counts) for _, ext, counts in frames], spool(path, [d for d, _, _ in frames])


def clean_store(
    cfg: Figure8Conf,
    split: SplitConf,
    store: Store,
    out_dir: Path,
    shard_bytes: int,
    workers: int | None = None,
    *,
    source: Source,
    executor: Executor | None = None,
) -> tuple[list[Row], dict]:
    """Write the cleaned store, each movie's frames in the movie's split; return its rows and
    metrics."""
    rows = store.rows()
    movies = frames_by_clip(
        r for r in rows if r.status == "ok" and r.meta.get("role") == "annotated"
    )
    raws = [r for r in rows if r.status == "ok" and r.meta.get("role") == "raw"]
    failed = [r for r in rows if r.status != "ok"]  # kept (no payload): export knows their ids
    dropped = Counter(f"movie_{r.status}" for r in failed)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(out_dir, shard_bytes)
    totals: Counter = Counter()
    cells = []
    executor = executor or LocalExecutor(workers)
    executor.check_visible(out_dir)
    spools = out_dir.absolute() / SPOOL
    names = sorted(movies)
    labels = [r for name in names for r in movies[name]]
    try:
        jobs = [
            ([ref(store, r) for r in movies[name]], cfg.clean, str(spools / f"{i:08d}.bin"))
            for i, name in enumerate(names)
        ]
        done = executor.map(clean_spooled, jobs, kind="process")
        bar = progress(done, total=len(jobs), desc="clean@figure8", unit="movie")
        for name, job, (info, sizes) in zip(names, jobs, bar, strict=True):
            images = unspool(job[2], sizes)
            for row, data, (ext, counts) in zip(movies[name], images, info, strict=True):
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
    finally:
        shutil.rmtree(spools, ignore_errors=True)
    kept = labels + rebase(raws, store.root, out_dir)
    firsts = [movies[name][0] for name in names]  # one per movie: the unit the splits count
    splits = assign_rows(kept + failed, firsts, list(cfg.classes), source, cfg, split)
    write_manifest(out_dir, kept + failed, list(cfg.classes))
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
        "splits": splits,
    }
    return kept, metrics
