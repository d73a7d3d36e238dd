"""clean-annotations stage: drop bad items, fix boxes, map class names to ids, give each item
its group's split, and check the quality gates (exact and near copies, leakage)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from stages.core.boxes import finite, pixel_edges, scale_of
from stages.core.config import CleanConf, GatesConf, SourceConf, SplitConf
from stages.core.errors import StoreError
from stages.core.executor import Executor, LocalExecutor
from stages.core.files import atomic_write
from stages.core.gallery import draw as gallery
from stages.core.gallery import sample
from stages.core.gates import (
    GateTripped,
    Pair,
    code_of,
    dedupe,
    find,
    message,
    report_csv,
    sheet,
    summary,
)
from stages.core.metrics import class_counts
from stages.core.parallel import pmap
from stages.core.splits import set_splits, split_metrics
from stages.core.store import Row, Store, frames_by_clip, read_payload, rebase, write_manifest
from stages.pipeline.entry import run_main, start
from stages.sources import Source

log = logging.getLogger("stages.clean_annotations")
EXTRA = {  # optional outputs: paths from dvc.yaml
    "--gates-report": "the quality gates' CSV of copies (pairs, worst first, and drops)",
    "--gates-sheet": "the quality gates' PNG contact sheet of the worst pairs",
    "--splits-plot": "items per split and class, for dvc plots",
    "--gallery": "a PNG of a seeded few items per class, boxes drawn, for dvc plots",
}
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
    threads: int = 1  # reading threads inside the task (a local run: one shard at a time)


def probe_shard(task: ProbeTask) -> list[tuple[tuple[tuple[int, int], bytes | None] | None, str]]:
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
    executor: Executor | None = None,
    strict: bool = False,
) -> list:
    """Return probe_shard's answer for every row, in order; one task per upstream shard."""
    by_shard: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_shard.setdefault(row.shard, []).append(i)
    located = store.located(rows)
    if executor is not None:
        executor.check_visible(files={Path(r.shard) for r in located[:1]})
    order = [by_shard[k] for k in sorted(by_shard)]
    tasks = [ProbeTask(tuple(located[i] for i in idx), decode, gates, strict) for idx in order]
    out: list = [None] * len(rows)
    executor = executor or LocalExecutor()
    if executor.remote:
        done = executor.map(probe_shard, tasks)
    else:  # one shard at a time, its items on every core
        done = (probe_shard(dataclasses.replace(t, threads=executor.slots)) for t in tasks)
    for idx, results in zip(order, done, strict=True):
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
class Gate:
    """What the quality gates found: copies worst first, and the exact copies dropped."""

    pairs: list[Pair]
    drops: list[Pair]
    metrics: dict


def clean(
    store: Store,
    source: Source,
    src_cfg: SourceConf,
    cfg: CleanConf,
    split_cfg: SplitConf,
    gates: GatesConf | None = None,
    executor: Executor | None = None,
) -> tuple[list[Row], list[str], dict, Gate | None]:
    """Return the cleaned rows (payloads unchanged), the class names, the metrics and what the
    quality gates found (None with gates off)."""
    gates = gates if gates is not None and gates.enabled else None
    names = source.names(src_cfg, store)
    ids = {n: i for i, n in enumerate(names)}
    decode, min_size = cfg.decode_check, cfg.min_box_size
    counts: Counter = Counter()
    dropped: Counter = Counter()
    counts_boxes: Counter = Counter()
    labels_lost: Counter = Counter()  # kept items that lost a label (per class)
    rows = store.rows()
    usable = [r for r in rows if r.status == "ok"]
    for r in rows:
        if r.status != "ok":
            # For video sources a failed row is a whole clip (fetch or decoding failed).
            dropped[f"clip_{r.status}" if source.video else f"{r.status}_at_fetch"] += 1

    kept = []
    codes: dict[str, tuple[bytes | None, str]] = {}
    probed = probe(store, usable, decode, gates, executor)
    for row, (info, sha) in zip(usable, probed, strict=True):
        if info is None:
            dropped["corrupt_image"] += 1
            continue
        (width, height), code = info
        codes[row.item_id] = code, sha
        if (row.width, row.height) != (None, None) and (row.width, row.height) != (width, height):
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
        labels_lost.update(set(known) - set(row.labels))  # e.g. its only box was too small
        row.label_ids = [ids[lab] for lab in row.labels]
        counts_boxes.update(b["label"] for b in row.boxes)
        kept.append(row)
    clips = None
    if source.video:
        kept, clips = keep_whole_clips(kept, cfg.min_frames, dropped)
    groups = set_splits(kept, source, src_cfg, split_cfg)
    drops: list[Pair] = []
    if gates is not None and gates.dedupe:
        if source.video:  # a clip's frames are a sequence: none is cut out of it
            log.warning("%s: gates.dedupe drops images, never video frames", source.name)
        else:
            before = kept
            kept, drops = dedupe(kept, [codes[r.item_id][1] for r in kept])
            gone = {p.b.item_id for p in drops}
            groups = [g for g, r in zip(groups, before, strict=True) if r.item_id not in gone]
            if drops:
                dropped["exact_duplicate"] += len(drops)
    units = kept if clips is None else clips
    by_group = {g: r.split for g, r in zip(groups, kept, strict=True)}
    splits = split_metrics(split_cfg, units, by_group, names, source.name)
    gate = None
    if gates is not None:
        gate = check(kept, [codes[r.item_id] for r in kept], groups, gates, drops)
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
        "labels_lost": {n: labels_lost[n] for n in names if labels_lost[n]},
        "bytes": sum(r.bytes or 0 for r in kept),
        "splits": splits,
        **({} if gate is None else {"gates": gate.metrics}),
    }
    return kept, names, metrics, gate


def gate_store(
    store: Store,
    source: Source,
    src_cfg: SourceConf,
    gates: GatesConf,
    executor: Executor | None = None,
) -> Gate:
    """Check the quality gates over a store a source cleaned itself (its `gated` items; no
    dedupe: the source's store is not ours to thin)."""
    rows = [r for r in store.rows() if r.status == "ok" and r.shard and source.gated(r)]
    if gates.dedupe:
        log.warning("%s: gates.dedupe does not apply to its own clean store", source.name)
    groups = [source.split_group(src_cfg, r)[0] for r in rows]
    probed = probe(store, rows, False, gates, executor, strict=True)
    return check(rows, [(info[1], sha) for info, sha in probed], groups, gates, [])


def check(
    rows: list[Row],
    hashed: list[tuple[bytes | None, str]],
    groups: list[str],
    gates: GatesConf,
    drops: list[Pair],
) -> Gate:
    """Find the copies among rows from their (hash, sha256), and sum them up for the gates."""
    codes, digests = [c for c, _ in hashed], [d for _, d in hashed]
    found = find(
        rows, codes, digests, groups, gates, max(gates.report_max_pairs, gates.sheet_pairs)
    )
    return Gate(found.pairs, drops, summary(found, drops, gates))


def write_gate_report(args, gate: Gate | None, gates: GatesConf, read) -> None:
    """Write the gate report CSV and contact sheet PNG where argv says (empty with gates off)."""
    pairs, drops = (gate.pairs, gate.drops) if gate else ([], [])
    if args.gates_report:
        atomic_write(args.gates_report, report_csv(pairs[: gates.report_max_pairs], drops))
    if args.gates_sheet:  # the worst pairs: what the gates are about, before what dedupe fixed
        atomic_write(args.gates_sheet, sheet([*pairs, *drops], read, gates.sheet_pairs))


def write_gallery(path, rows: list[Row], classes: list[str], cfg: CleanConf, read) -> None:
    """Write the per-class sample gallery (a video's clips by their first frame)."""
    sections = sample(rows, classes, cfg.gallery_per_class, cfg.gallery_seed)
    unlabelled = [r for r in rows if not r.labels]
    if unlabelled:  # e.g. raw frames of a source whose labels are images
        sections += sample([dataclasses.replace(r, labels=["(unlabelled)"]) for r in unlabelled],
                           ["(unlabelled)"], cfg.gallery_per_class, cfg.gallery_seed)  # fmt: skip
    atomic_write(path, gallery([(c, rs) for c, rs in sections if rs], read))


def main(argv: list[str] | None = None) -> int:
    """Run clean-annotations for one source."""
    run = start(argv, "stages.clean_annotations", __doc__, extra=EXTRA)
    args = run.args
    store = Store(args.inp)
    gates = run.section("gates")
    if "clean-annotations" in run.source.own_stages:  # e.g. label images cleaned pixel by pixel
        shard_bytes = run.section("store").shard_bytes
        with run.executor() as ex:
            _, metrics = run.source.clean_store(
                run.cfg,
                run.section("clean"),
                run.section("split"),
                store,
                args.out,
                shard_bytes,
                ex,
            )
            cleaned = Store(args.out)
            gate = gate_store(cleaned, run.source, run.cfg, gates, ex) if gates.enabled else None
        if gate is not None:
            metrics["gates"] = gate.metrics
        write_gate_report(args, gate, gates, cleaned.read)
        if args.gallery:
            pictures = [
                r for r in cleaned.rows() if r.status == "ok" and r.shard and run.source.gated(r)
            ]
            firsts = [frames[0] for frames in frames_by_clip(pictures).values()]
            names = cleaned.classes or list(run.cfg.classes)
            write_gallery(args.gallery, firsts, names, run.section("clean"), cleaned.read)
    else:
        with run.executor() as ex:
            rows, names, metrics, gate = clean(
                store, run.source, run.cfg, run.section("clean"), run.section("split"), gates, ex
            )
        write_gate_report(args, gate, gates, store.read)
        if args.gallery:
            units = [f[0] for f in frames_by_clip(rows).values()] if run.source.video else rows
            write_gallery(args.gallery, units, names, run.section("clean"), store.read)
        args.out.mkdir(parents=True)
        # Payloads are unchanged: the manifest points into the upstream shards.
        write_manifest(args.out, rebase(rows, args.inp, args.out), names)
    run.finish(metrics, per_split=metrics["splits"]["classes"])
    if metrics.get("gates", {}).get("tripped"):
        report = run.readable_after_failure(args.gates_report or Path("plots/gates.csv"))
        raise GateTripped(message(args.source, metrics["gates"], f"{report} and its PNG sheet"))
    log.info("clean@%s: %s", args.source, explain(metrics, run.section("clean").min_box_size))
    return 0


def explain(metrics: dict, min_box_size: float) -> str:
    """Say what clean kept and why anything was dropped: items, boxes, labels."""
    parts = [f"kept {metrics['items_out']} of {metrics['items_in']} items"]
    if metrics["dropped"]:
        parts[0] += " (dropped: " + ", ".join(f"{k} {v}" for k, v in metrics["dropped"].items())
        parts[0] += ")"
    if metrics.get("boxes_in"):
        why = {
            "boxes_dropped_degenerate": f"under clean.min_box_size {min_box_size:g} px",
            "boxes_dropped_invalid": "not finite",
        }
        lost = [f"{metrics[k]} {text}" for k, text in why.items() if metrics.get(k)]
        parts.append(
            f"{metrics['boxes_out']} of {metrics['boxes_in']} boxes"
            + (f" (dropped: {', '.join(lost)})" if lost else "")
            + (
                f", {metrics['boxes_clamped']} clamped into the image"
                if metrics["boxes_clamped"]
                else ""
            )
        )
    if metrics.get("labels_lost"):
        parts.append(
            "labels lost with their boxes: "
            + ", ".join(f"{k} {v}" for k, v in metrics["labels_lost"].items())
        )
    return "; ".join(parts)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    run_main(main)
