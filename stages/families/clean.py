"""Cleaning boxed images and video frames: drop bad items, fix boxes, map class names to ids,
give each item its group's split, and check the quality gates (exact and near copies, leakage).

Payloads are unchanged: the clean store's manifest points into the upstream shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from stages.core.boxes import finite, pixel_edges, scale_of
from stages.core.config import CleanConf, GatesConf, SourceConf
from stages.core.errors import StoreError
from stages.core.executor import Executor
from stages.core.gates import Gate, Pair, code_of, dedupe, judge
from stages.core.metrics import class_counts
from stages.core.parallel import pmap
from stages.core.splits import set_splits, split_metrics
from stages.core.store import Row, Store, frames_by_clip, read_payload, rebase, write_manifest
from stages.families import Cleaned, Cleaner, Inputs

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


def inspect_image(
    data: bytes, decode: bool, gates: GatesConf | None = None
) -> tuple[tuple[int, int], bytes | None] | None:
    """Return an image's (width, height) and perceptual hash (with gates: None when the hash
    cannot read it), or None if it is unusable."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            if decode:
                im.load()
            code = None
            if gates is not None:
                try:
                    code = code_of(im, gates)
                except Exception:  # e.g. a mode the hash cannot convert: counted, kept
                    code = None
    except Exception:  # Pillow raises many types for bad data
        return None
    return size, code


def digest(row: Row, data: bytes) -> str:
    """Return an item's sha256: as recorded upstream, else of its payload."""
    return row.sha256 or hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ProbeTask:
    """The items of one upstream shard to check (a task): shards located, settings."""

    rows: tuple[Row, ...]
    decode: bool
    gates: GatesConf | None
    strict: bool  # an undecodable item is the store's damage (a store this stage wrote)
    threads: int = 1  # reading threads inside the task


Probed = tuple[tuple[tuple[int, int], bytes | None] | None, str]


def probe_shard(task: ProbeTask) -> list[Probed]:
    """Return each item's (size, perceptual hash) or None if unusable, and its sha256."""

    def one(row: Row):
        data = read_payload(row.shard, row)
        info = inspect_image(data, task.decode, task.gates)
        if info is None and task.strict:
            raise StoreError(f"{row.item_id}: undecodable in the clean store: run it again")
        return info, digest(row, data)

    return list(pmap(one, task.rows, workers=task.threads))


def probe(
    store: Store,
    rows: list[Row],
    decode: bool,
    gates: GatesConf | None,
    executor: Executor,
    strict: bool = False,
) -> list[Probed]:
    """Return probe_shard's answer for every row, in order; one task per upstream shard."""
    by_shard: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_shard.setdefault(row.shard, []).append(i)
    located = store.located(rows)
    executor.check_visible(files={Path(r.shard) for r in located[:1]})
    order = [by_shard[k] for k in sorted(by_shard)]
    tasks = [ProbeTask(tuple(located[i] for i in idx), decode, gates, strict) for idx in order]
    out: list = [None] * len(rows)
    for idx, results in zip(order, executor.map_shards(probe_shard, tasks), strict=True):
        for i, res in zip(idx, results, strict=True):
            out[i] = res
    return out


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


@dataclass
class Tally:
    """What cleaning counted over every batch."""

    counts: Counter = dataclasses.field(default_factory=Counter)  # shared and the source's
    dropped: Counter = dataclasses.field(default_factory=Counter)
    boxes: Counter = dataclasses.field(default_factory=Counter)  # kept boxes per class
    labels_lost: Counter = dataclasses.field(default_factory=Counter)  # per class


class ImageCleaner(Cleaner):
    """Boxed images: the shared checks, then the source's own (`clean_rows`), each item in its
    group's split, the gates over what is kept."""

    def clean_rows(self, cfg: SourceConf, rows: list[Row], counts: Counter) -> list[Row]:
        """Apply source-specific cleaning to a batch of rows that passed the shared checks
        (hook): return the rows kept (possibly changed); count what was done in `counts`."""
        return rows

    def stats(self, cfg: SourceConf, store: Store) -> dict:
        """Return source-specific counts for the metrics, from the input store (hook)."""
        return {}

    def failed_key(self, status: str) -> str:
        """Return the drop reason of an item fetch did not deliver."""
        return f"{status}_at_fetch"

    def units(self, kept: list[Row], clean: CleanConf, dropped: Counter):
        """Return the kept items and the units the splits and classes count (images: each)."""
        return kept, None

    def dedupe(self, inputs: Inputs, kept: list[Row], digests: list[str]):
        """Drop exact copies (gates.dedupe); return what is kept and the pairs dropped."""
        return dedupe(kept, digests)

    def clean_batch(
        self,
        inputs: Inputs,
        clean: CleanConf,
        ids: dict[str, int],
        rows: list[Row],
        probed: list[Probed],
        tally: Tally,
    ) -> list[Row]:
        """Clean one batch of usable rows from their probes; return the rows kept."""
        counts, dropped = tally.counts, tally.dropped
        checked = []
        for row, (info, _) in zip(rows, probed, strict=True):
            if info is None:
                dropped["corrupt_image"] += 1
                continue
            (width, height), _ = info
            if (row.width, row.height) != (None, None) and (row.width, row.height) != (
                width,
                height,
            ):
                counts["size_mismatch"] += 1
            known = [lab for lab in row.labels if lab in ids]
            if len(known) != len(row.labels):
                counts["labels_unknown"] += len(row.labels) - len(known)
            if not known and clean.drop_unlabeled:
                dropped["unlabeled"] += 1
                continue
            counts["boxes_in"] += len(row.boxes)
            row.boxes = [
                b
                for b in clean_boxes(row, width, height, clean.min_box_size, counts)
                if b["label"] in ids
            ]
            row.meta.pop("box_units", None)  # boxes are now pixels of this image
            counts["boxes_out"] += len(row.boxes)
            row.width, row.height = width, height
            row.labels = known
            checked.append((row, known))
        kept = self.clean_rows(inputs.cfg, [r for r, _ in checked], counts)
        if len(kept) < len(checked):
            dropped["by_source"] += len(checked) - len(kept)
        known_of = {r.item_id: known for r, known in checked}
        for row in kept:
            row.labels = sorted((lab for lab in row.labels if lab in ids), key=ids.__getitem__)
            # e.g. its only box was too small
            tally.labels_lost.update(set(known_of.get(row.item_id, ())) - set(row.labels))
            row.label_ids = [ids[lab] for lab in row.labels]
            tally.boxes.update(b["label"] for b in row.boxes)
        return kept

    def clean(
        self, inputs: Inputs, clean: CleanConf, gates: GatesConf | None
    ) -> tuple[list[Row], list[str], dict, Gate | None]:
        """Return the cleaned rows (payloads unchanged), the class names, the metrics and what
        the quality gates found (None with gates off)."""
        gates = gates if gates is not None and gates.enabled else None
        store, src_cfg, split_cfg = inputs.store, inputs.cfg, inputs.split
        names = inputs.names()
        ids = {n: i for i, n in enumerate(names)}
        tally = Tally()
        rows = store.rows()
        usable = [r for r in rows if r.status == "ok"]
        for r in rows:
            if r.status != "ok":
                tally.dropped[self.failed_key(r.status)] += 1
        probed = probe(store, usable, clean.decode_check, gates, inputs.executor)
        pairs = zip(usable, probed, strict=True)
        codes = {r.item_id: (info[1], sha) for r, (info, sha) in pairs if info}
        kept = self.clean_batch(inputs, clean, ids, usable, probed, tally)
        kept, clips = self.units(kept, clean, tally.dropped)
        group_of = inputs.source.split_group
        groups = set_splits(kept, lambda r: group_of(src_cfg, r), inputs.source.name, split_cfg)
        drops: list[Pair] = []
        if gates is not None and gates.dedupe:
            before = kept
            kept, drops = self.dedupe(inputs, kept, [codes[r.item_id][1] for r in kept])
            gone = {p.b.item_id for p in drops}
            groups = [g for g, r in zip(groups, before, strict=True) if r.item_id not in gone]
            if drops:
                tally.dropped["exact_duplicate"] += len(drops)
        units = kept if clips is None else clips
        by_group = {g: r.split for g, r in zip(groups, kept, strict=True)}
        splits = split_metrics(split_cfg, units, by_group, names, inputs.source.name)
        gate = None
        if gates is not None:
            gate = judge(kept, [codes[r.item_id] for r in kept], groups, gates, drops)
        counts, dropped = tally.counts, tally.dropped
        metrics = {
            "items_in": len(rows),
            "items_out": len(kept),
            "dropped": dict(sorted(dropped.items())),
            "dropped_total": sum(dropped.values()),
            **{k: counts.get(k, 0) for k in SHARED_COUNTS},
            # What a source's clean_rows hook counted, under its own names.
            "source": {
                **{k: v for k, v in sorted(counts.items()) if k not in SHARED_COUNTS},
                **self.stats(src_cfg, store),
            },
            # Video: classes count clips (each clip's first frame stands for it), not frames.
            "classes": class_counts(units, names),
            **({} if clips is None else {"clips_out": len(clips), "frames_out": len(kept)}),
            "class_ids": ids,
            "boxes_per_class": {n: tally.boxes.get(n, 0) for n in names},
            "labels_lost": {n: tally.labels_lost[n] for n in names if tally.labels_lost[n]},
            "bytes": sum(r.bytes or 0 for r in kept),
            "splits": splits,
            **({} if gate is None else {"gates": gate.metrics}),
        }
        return kept, names, metrics, gate

    def gallery(self, kept: list[Row]) -> list[Row]:
        """Return the rows the gallery samples from."""
        return kept

    def run(self, inputs: Inputs, clean: CleanConf, gates: GatesConf) -> Cleaned:
        """Clean the store; write its manifest (pointing into the upstream shards)."""
        kept, names, metrics, gate = self.clean(inputs, clean, gates)
        inputs.out_dir.mkdir(parents=True)
        write_manifest(inputs.out_dir, rebase(kept, inputs.store.root, inputs.out_dir), names)
        return Cleaned(metrics, names, gate, self.gallery(kept), Store(inputs.out_dir).read)


class VideoCleaner(ImageCleaner):
    """Video frames: cleaned as images, whole clips kept or dropped, never thinned."""

    def failed_key(self, status: str) -> str:
        # A failed row is a whole clip (fetch or decoding failed).
        return f"clip_{status}"

    def units(self, kept: list[Row], clean: CleanConf, dropped: Counter):
        return keep_whole_clips(kept, clean.min_frames, dropped)

    def dedupe(self, inputs: Inputs, kept: list[Row], digests: list[str]):
        # A clip's frames are a sequence: none is cut out of it.
        log.warning("%s: gates.dedupe drops images, never video frames", inputs.source.name)
        return kept, []

    def gallery(self, kept: list[Row]) -> list[Row]:
        return [frames[0] for frames in frames_by_clip(kept).values()]


def gate_rows(inputs: Inputs, store: Store, rows: list[Row], gates: GatesConf) -> Gate:
    """Check the quality gates over rows of a store a source cleaned itself (no dedupe: the
    source's store is not ours to thin)."""
    if gates.dedupe:
        log.warning("%s: gates.dedupe does not apply to its own clean store", inputs.source.name)
    groups = [inputs.source.split_group(inputs.cfg, r)[0] for r in rows]
    probed = probe(store, rows, False, gates, inputs.executor, strict=True)
    return judge(rows, [(info[1], sha) for info, sha in probed], groups, gates, [])
