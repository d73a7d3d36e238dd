"""clean-annotations stage: drop bad items, fix boxes, map class names to ids."""

from __future__ import annotations

import io
import logging
import os
from collections import Counter

from PIL import Image

from stages.core.boxes import finite, pixel_edges, scale_of
from stages.core.config import CleanConf, SourceConf, SplitConf
from stages.core.errors import MetadataError
from stages.core.metrics import class_counts
from stages.core.parallel import pmap
from stages.core.splits import check, own_split, report, split_of
from stages.core.store import Row, Store, frames_by_clip, rebase, write_manifest
from stages.pipeline.entry import run_main, start
from stages.sources import Source

log = logging.getLogger("stages.clean_annotations")
SHARED_COUNTS = (
    "boxes_in",
    "boxes_out",
    "boxes_clamped",
    "boxes_dropped_degenerate",
    "boxes_dropped_invalid",
    "size_mismatch",
    "labels_unknown",
)


def inspect_image(data: bytes, decode: bool) -> tuple[int, int] | None:
    """Return (width, height) of an image, or None if it is unusable."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            if decode:
                im.load()
    except Exception:  # Pillow raises many types for bad data
        return None
    return size


def clean_boxes(row: Row, width: int, height: int, min_size: float, counts: Counter) -> list[dict]:
    """Put boxes on the pixel edges of the image received (core.boxes), dropping tiny ones."""
    sx, sy = scale_of(row, width, height)
    out = []
    for box in row.boxes:
        if not finite(box):
            counts["boxes_dropped_invalid"] += 1
            continue
        (x0, y0, x1, y1), clamped = pixel_edges(box, sx, sy, width, height)
        if clamped:
            counts["boxes_clamped"] += 1
        if x1 - x0 < max(min_size, 1) or y1 - y0 < max(min_size, 1):
            counts["boxes_dropped_degenerate"] += 1
            continue
        out.append({"label": box["label"], "x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0})
    return out


def keep_whole_clips(rows: list[Row], min_frames: int, dropped: Counter):
    """Drop the frames of clips left with fewer than min_frames; return (frames, one per clip)."""
    kept, firsts = [], []
    for frames in frames_by_clip(rows).values():
        if len(frames) < min_frames:
            dropped["clip_too_short"] += 1
            dropped["frames_of_short_clips"] += len(frames)
            continue
        kept.extend(frames)
        firsts.append(frames[0])
    return kept, firsts


def assign_splits(
    rows: list[Row],
    units: list[Row],
    names: list[str],
    source: Source,
    src_cfg: SourceConf,
    cfg: SplitConf,
) -> dict:
    """Set each row's split from its group (core.splits); return the split metrics over
    `units` (the items, or a video's clips)."""
    groups: dict[str, str] = {}
    for row in rows:
        group, own = source.split_group(src_cfg, row)
        if own is not None:
            split = own_split(cfg, own, f"{source.name} item {row.item_id!r}")
        else:  # drawn once per group: a video's frames or a site's images share it
            split = groups.get(group) or split_of(cfg, source.name, group)
        if groups.setdefault(group, split) != split:
            raise MetadataError(
                f"{source.name}: group {group!r} names two splits ({groups[group]!r} and "
                f"{split!r}, at item {row.item_id!r}): its near copies would leak"
            )
        row.split = split
    metrics = report(cfg, [(r.split, r.labels) for r in units], groups, names)
    metrics["warnings"] = check(cfg, metrics, source.name)
    for line in metrics["warnings"]:
        log.warning("%s", line)
    return metrics


def clean(
    store: Store, source: Source, src_cfg: SourceConf, cfg: CleanConf, split_cfg: SplitConf
) -> tuple[list[Row], list[str], dict]:
    """Return the cleaned rows (payloads unchanged), the class names and the metrics."""
    names = source.names(src_cfg, store)
    ids = {n: i for i, n in enumerate(names)}
    decode, min_size = cfg.decode_check, cfg.min_box_size
    counts: Counter = Counter()
    dropped: Counter = Counter()
    counts_boxes: Counter = Counter()
    rows = store.rows()
    usable = [r for r in rows if r.status == "ok"]
    for r in rows:
        if r.status != "ok":
            # For video sources a failed row is a whole clip (fetch or decoding failed).
            dropped[f"clip_{r.status}" if source.video else f"{r.status}_at_fetch"] += 1

    def probe(row: Row):
        return row, inspect_image(store.read(row), decode)

    kept = []
    for row, info in pmap(probe, usable):
        if info is None:
            dropped["corrupt_image"] += 1
            continue
        width, height = info
        if (row.width, row.height) != (None, None) and (row.width, row.height) != info:
            counts["size_mismatch"] += 1
        known = [lab for lab in row.labels if lab in ids]
        if len(known) != len(row.labels):
            counts["labels_unknown"] += len(row.labels) - len(known)
        if not known and cfg.drop_unlabeled:
            dropped["unlabeled"] += 1
            continue
        counts["boxes_in"] += len(row.boxes)
        row.boxes = [
            b for b in clean_boxes(row, width, height, min_size, counts) if b["label"] in ids
        ]
        row.meta.pop("box_units", None)  # boxes are now pixels of this image
        counts["boxes_out"] += len(row.boxes)
        row.width, row.height = width, height
        row.labels = known
        row = source.clean_row(src_cfg, row, counts)
        if row is None:
            dropped["by_source"] += 1
            continue
        row.labels = sorted((lab for lab in row.labels if lab in ids), key=ids.__getitem__)
        row.label_ids = [ids[lab] for lab in row.labels]
        counts_boxes.update(b["label"] for b in row.boxes)
        kept.append(row)
    clips = None
    if source.video:
        kept, clips = keep_whole_clips(kept, cfg.min_frames, dropped)
    units = kept if clips is None else clips
    splits = assign_splits(kept, units, names, source, src_cfg, split_cfg)
    metrics = {
        "items_in": len(rows),
        "items_out": len(kept),
        "dropped": dict(sorted(dropped.items())),
        "dropped_total": sum(dropped.values()),
        **{k: counts.get(k, 0) for k in SHARED_COUNTS},
        # What a source's clean_row hook counted, under its own names.
        "source": {
            **{k: v for k, v in sorted(counts.items()) if k not in SHARED_COUNTS},
            **source.clean_stats(src_cfg, store),
        },
        # Video: classes count clips (each clip's first frame stands for it), not frames.
        "classes": class_counts(kept if clips is None else clips, names),
        **({} if clips is None else {"clips_out": len(clips), "frames_out": len(kept)}),
        "class_ids": ids,
        "boxes_per_class": {n: counts_boxes.get(n, 0) for n in names},
        "bytes": sum(r.bytes or 0 for r in kept),
        "splits": splits,
    }
    return kept, names, metrics


def main(argv: list[str] | None = None) -> int:
    """Run clean-annotations for one source."""
    run = start(argv, "stages.clean_annotations", __doc__)
    args = run.args
    store = Store(args.inp)
    if "clean-annotations" in run.source.own_stages:  # e.g. label images cleaned pixel by pixel
        shard_bytes = run.section("store").shard_bytes
        _, metrics = run.source.clean_store(
            run.cfg, run.section("clean"), store, args.out, shard_bytes
        )
    else:
        rows, names, metrics = clean(
            store, run.source, run.cfg, run.section("clean"), run.section("split")
        )
        args.out.mkdir(parents=True)
        # Payloads are unchanged: the manifest points into the upstream shards.
        write_manifest(args.out, rebase(rows, args.inp, args.out), names)
    run.finish(metrics)
    log.info(
        "clean@%s: kept %d of %d (%s)",
        args.source,
        metrics["items_out"],
        metrics["items_in"],
        ", ".join(f"{k} {v}" for k, v in metrics["dropped"].items()),
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    run_main(main)
