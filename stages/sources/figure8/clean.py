"""clean-annotations@figure8: every label frame cleaned (`labels.py`); raw frames pass through.

Each frame is cleaned on its own; then a movie's frames are renumbered 1..N together, so a
cell keeps one label through the movie. Cleaned label frames are new payloads in this stage's
shards; raw frames stay in the extract-frames shards (the manifest points there). Each label
frame's meta records its cell count and what cleaning changed; movies extract-frames could
not make stay in the manifest without payload (so export knows their ids) and are counted.
"""

from __future__ import annotations

import io
import statistics
from collections import Counter
from pathlib import Path

from stages.core.config import CleanConf, GatesConf
from stages.core.errors import StoreError
from stages.core.files import spool, unspool
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
from stages.families import Cleaned, Cleaner, Inputs
from stages.families.clean import gate_rows
from stages.formats.images import decode_array, encode_array
from stages.sources.figure8.conf import Figure8Clean, Figure8Conf
from stages.sources.figure8.labels import clean_movie_labels
from stages.sources.figure8.movies import Ref, ref


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


def clean_spooled(job: tuple[tuple[list[Ref], Figure8Clean], str]) -> tuple[list, list[int]]:
    """Clean one movie (a task) into its spool file; return each frame's (ext, counts) and
    the images' sizes (small: never the images)."""
    (where, cfg), path = job
    frames = clean_movie((where, cfg))
    return [(ext, counts) for _, ext, counts in frames], spool(path, [d for d, _, _ in frames])


class Figure8Cleaner(Cleaner):
    """Label frames cleaned movie by movie (a task each), raw frames passed through; the
    gates compare the raw frames only."""

    def clean(self, inputs: Inputs) -> dict:
        """Write the cleaned store, each movie's frames in the movie's split; return its
        metrics."""
        cfg: Figure8Conf = inputs.cfg
        store, out_dir, ex = inputs.store, inputs.out_dir, inputs.executor
        rows = store.rows()
        movies = frames_by_clip(
            r for r in rows if r.status == "ok" and r.meta.get("role") == "annotated"
        )
        raws = [r for r in rows if r.status == "ok" and r.meta.get("role") == "raw"]
        failed = [r for r in rows if r.status != "ok"]  # kept (no payload): export knows ids
        dropped = Counter(f"movie_{r.status}" for r in failed)
        out_dir.mkdir(parents=True, exist_ok=True)
        ex.check_visible(out_dir)
        writer = ShardWriter(out_dir, inputs.shard_bytes)
        totals: Counter = Counter()
        cells = []
        names = sorted(movies)
        labels = [r for name in names for r in movies[name]]

        def pack(i: int, res: tuple[list, list[int]], path: Path) -> None:
            info, sizes = res
            images = unspool(path, sizes)
            for row, data, (ext, counts) in zip(movies[names[i]], images, info, strict=True):
                row.shard, row.offset = writer.add(
                    member_name(row.item_id, ext), io.BytesIO(data), len(data)
                )
                row.bytes, row.sha256 = len(data), None
                row.meta = {**row.meta, **counts, "ext": ext}
                totals.update(counts)
                cells.append(counts["cells"])

        jobs = [([ref(store, r) for r in movies[name]], cfg.clean) for name in names]
        ex.pack_spooled(
            clean_spooled, jobs, out_dir, writer, pack, desc="clean@figure8", unit="movie"
        )
        kept = labels + rebase(raws, store.root, out_dir)
        firsts = [movies[name][0] for name in names]  # one per movie: the unit splits count
        splits = assign_rows(
            kept + failed,
            firsts,
            list(cfg.classes),
            lambda r: inputs.source.split_group(cfg, r),
            inputs.source.name,
            inputs.split,
        )
        write_manifest(out_dir, kept + failed, list(cfg.classes))
        return {
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

    def run(self, inputs: Inputs, clean: CleanConf, gates: GatesConf) -> Cleaned:
        """Clean the store, then check the gates over its raw frames (pictures to compare;
        label frames are not)."""
        metrics = self.clean(inputs)
        cleaned = Store(inputs.out_dir)
        pictures = [
            r
            for r in cleaned.rows()
            if r.status == "ok" and r.shard and r.meta.get("role") == "raw"
        ]
        gate = gate_rows(inputs, cleaned, pictures, gates) if gates.enabled else None
        if gate is not None:
            metrics["gates"] = gate.metrics
        firsts = [frames[0] for frames in frames_by_clip(pictures).values()]
        names = cleaned.classes or list(inputs.cfg.classes)
        return Cleaned(metrics, names, gate, firsts, cleaned.read)
