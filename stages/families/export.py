"""Training arrays from a clean store: resized images, labels and boxes (or clips of evenly
spaced frames) as deterministic npz shards, one set per split (`<split>/shard-NNNNN.npz`, in
the order of split.names). Each shard is a task: its rows are the batch."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from stages.core.config import Aspect, ExportConf
from stages.core.executor import Executor
from stages.core.parallel import pmap
from stages.core.selection import even_indices
from stages.core.store import Row, Store, frames_by_clip, read_payload
from stages.families import Exporter, Inputs
from stages.formats.npz import write_npz


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


@dataclass(frozen=True)
class ShardTask:
    """One npz shard to write (a task): its rows (shards located), settings and path."""

    rows: tuple[Row, ...]
    names: tuple[str, ...]
    cfg: ExportConf
    path: str
    clips: tuple[tuple[str, int], ...] = ()  # clip shards: (clip id, its frames among rows)
    threads: int = 1  # decoding threads inside the task (a local run: one shard at a time)


@dataclass
class ShardDone:
    """What a shard task reports (small: never the arrays)."""

    items: int = 0
    skipped: int = 0
    bytes: int = 0
    classes: dict[str, int] = field(default_factory=dict)


def run_tasks(tasks: list[ShardTask], fn, executor: Executor, out_dir: Path) -> list[ShardDone]:
    """Run shard tasks in order, one batch each."""
    try:
        return list(executor.map_shards(fn, tasks))
    finally:
        # A task's worker killed mid-write leaves its temporary file: never part of the output.
        for leftover in out_dir.glob("*.part"):
            leftover.unlink(missing_ok=True)


def _transformed(task: ShardTask, rows) -> list:
    def one(r: Row):
        return transform(read_payload(r.shard, r), r, task.cfg)

    return list(pmap(one, rows, workers=task.threads))


def image_shard(task: ShardTask) -> ShardDone:
    """Write one shard of X, y, multi-hot labels, ragged boxes, classes and ids."""
    names = list(task.names)
    ids = {n: i for i, n in enumerate(names)}
    pairs = zip(task.rows, _transformed(task, task.rows), strict=True)
    kept = [(r, res) for r, res in pairs if res is not None]
    done = ShardDone(skipped=len(task.rows) - len(kept))
    if not kept:
        return done
    chunk, results = [r for r, _ in kept], [res for _, res in kept]
    n = len(chunk)
    multi = np.zeros((n, len(names)), np.uint8)
    for i, r in enumerate(chunk):
        multi[i, r.label_ids or []] = 1
        for lab in r.labels:
            done.classes[lab] = done.classes.get(lab, 0) + 1
    offsets = np.zeros(n + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for _, b, _ in results])
    write_npz(
        Path(task.path),
        {
            "X": np.stack([a for a, _, _ in results]),
            "y": np.array([r.label_ids[0] if r.label_ids else -1 for r in chunk], np.int64),
            "labels": multi,
            "boxes": np.concatenate([b for _, b, _ in results]).astype(np.float32),
            "box_offsets": offsets,
            "box_labels": np.array([ids[lab] for _, _, labs in results for lab in labs], np.int64),
            "classes": np.array(names, dtype=str),
            "ids": np.array([r.item_id for r in chunk], dtype=str),
        },
        task.cfg.compress,
    )
    done.items, done.bytes = n, Path(task.path).stat().st_size
    return done


def clip_shard(task: ShardTask) -> ShardDone:
    """Write one shard of clips: X (N,T,H,W,3) of T evenly spaced frames, y, classes, ids."""
    T = task.cfg.frames
    done = ShardDone()
    results = _transformed(task, task.rows)
    arrays, kept = [], []
    first = 0
    for clip, count in task.clips:
        frames, got = task.rows[first : first + count], results[first : first + count]
        first += count
        if count < T or any(res is None for res in got):
            done.skipped += 1  # short: only with clean.min_frames below export.frames
            continue
        arrays.append(np.stack([a for a, _, _ in got]))
        kept.append((clip, frames[0]))
    if not kept:
        return done
    for _, r in kept:
        for lab in r.labels:
            done.classes[lab] = done.classes.get(lab, 0) + 1
    write_npz(
        Path(task.path),
        {
            "X": np.stack(arrays),
            "y": np.array([r.label_ids[0] if r.label_ids else -1 for _, r in kept], np.int64),
            "classes": np.array(task.names, dtype=str),
            "ids": np.array([clip for clip, _ in kept], dtype=str),
        },
        task.cfg.compress,
    )
    done.items, done.bytes = len(kept), Path(task.path).stat().st_size
    return done


class ImageExporter(Exporter):
    """Boxed images: X, y, multi-hot labels, ragged boxes, classes and ids per shard."""

    shape_key = "image_size"
    skipped_key = "skipped_undecodable"

    def tasks(
        self, rows: list[Row], store: Store, names: list[str], cfg: ExportConf, out_dir: Path
    ) -> list[ShardTask]:
        """Return a split's shard tasks: shard i holds the i-th `items_per_shard` rows (the
        cut depends on the rows alone)."""
        per = cfg.items_per_shard
        located = store.located(rows)
        return [
            ShardTask(
                tuple(located[first : first + per]),
                tuple(names),
                cfg,
                str(out_dir.absolute() / f"shard-{first // per:05d}.npz"),
            )
            for first in range(0, len(located), per)
        ]

    def shape(self, cfg: ExportConf) -> list[int]:
        """Return the shape of one entry, for the metrics."""
        return [cfg.height, cfg.width]

    shard = staticmethod(image_shard)

    def export(
        self,
        rows: list[Row],
        store: Store,
        names: list[str],
        cfg: ExportConf,
        out_dir: Path,
        executor: Executor,
    ) -> dict:
        """Write one split's shards under out_dir; return its metrics."""
        out_dir.mkdir(parents=True, exist_ok=True)
        tasks = self.tasks(rows, store, names, cfg, out_dir)
        done = run_tasks(tasks, self.shard, executor, out_dir)
        return {
            "items": sum(d.items for d in done),
            self.skipped_key: sum(d.skipped for d in done),
            "shards": sum(1 for d in done if d.items),
            "bytes": sum(d.bytes for d in done),
            self.shape_key: self.shape(cfg),
            "classes": {n: sum(d.classes.get(n, 0) for d in done) for n in names},
        }

    def run(self, inputs: Inputs, export: ExportConf) -> dict:
        """Write each split's shards under out_dir/<split>/; return totals and per-split
        metrics."""
        store, out_dir, splits = inputs.store, inputs.out_dir, inputs.split.names
        names = inputs.names()
        usable = [r for r in store.rows() if r.status == "ok" and r.shard is not None]
        inputs.executor.check_visible(out_dir, files={store.shard_path(r) for r in usable[:1]})
        per = {
            split: self.export(rows, store, names, export, out_dir / split, inputs.executor)
            for split, rows in by_split(usable, splits).items()
        }
        totals = {
            key: sum(m[key] for m in per.values())
            for key in per[splits[0]]
            if isinstance(per[splits[0]][key], int)
        }
        classes = {n: sum(m["classes"][n] for m in per.values()) for n in names}
        shape = per[splits[0]][self.shape_key]
        return {**totals, self.shape_key: shape, "classes": classes, "splits": per}


class ClipExporter(ImageExporter):
    """Clips: X (N,T,H,W,3) of T evenly spaced frames, y, classes and ids per shard."""

    shape_key = "clip_shape"
    skipped_key = "skipped_short_or_undecodable"
    shard = staticmethod(clip_shard)

    def tasks(self, rows, store, names, cfg, out_dir):
        """Return a split's shard tasks: shard i holds the i-th `clips_per_shard` clips."""
        by_clip = frames_by_clip(store.located(rows))
        clips = sorted(by_clip)
        T, per = cfg.frames, cfg.clips_per_shard
        tasks = []
        for first in range(0, len(clips), per):
            picked: list[Row] = []
            counts: list[tuple[str, int]] = []  # each clip's frames among picked: T, or 0
            for clip in clips[first : first + per]:
                frames = by_clip[clip]
                chosen = (
                    [frames[i] for i in even_indices(len(frames), T)] if len(frames) >= T else []
                )
                picked += chosen
                counts.append((clip, len(chosen)))
            path = out_dir.absolute() / f"shard-{first // per:05d}.npz"
            tasks.append(ShardTask(tuple(picked), tuple(names), cfg, str(path), tuple(counts)))
        return tasks

    def shape(self, cfg: ExportConf) -> list[int]:
        return [cfg.frames, cfg.height, cfg.width, 3]
