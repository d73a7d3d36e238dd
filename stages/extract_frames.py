"""extract-frames stage: decode each fetched clip once into resized JPEG frames in the store.

Each frame is an item (`<clip id>/<position:06d>`) whose meta names its clip, its position
among the clip window's frames and its time from the window's start. A clip that cannot be
decoded is one row with status `corrupt` and the reason; the stage goes on with the rest.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from stages.core.config import FramesConf, SourceConf
from stages.core.metrics import class_counts
from stages.core.parallel import default_workers, pmap
from stages.core.store import Row, ShardWriter, Store, member_name, write_manifest
from stages.pipeline.entry import run_main, start
from stages.sources import Source

log = logging.getLogger("stages.extract_frames")


@dataclass(frozen=True)
class Task:
    """One clip to decode: where its bytes are, and what to make of them (picklable)."""

    shard: str
    offset: int
    size: int
    short_side: int | None
    fps: float | None
    num_frames: int | None
    quality: int
    interpolation: str
    window: tuple[float, float] | None
    threads: str


def task_for(store: Store, row: Row, cfg: FramesConf, threads: str) -> Task:
    """Return the decoding task for one fetched clip."""
    window = row.meta.get("window")
    return Task(
        shard=str(store.shard_path(row)),
        offset=row.offset,
        size=row.bytes,
        short_side=cfg.short_side,
        fps=cfg.fps,
        num_frames=cfg.num_frames,
        quality=cfg.quality,
        interpolation=cfg.interpolation.value,
        window=(float(window[0]), float(window[1])) if window else None,
        threads=threads,
    )


class Segment(io.RawIOBase):
    """A read-only, seekable view of one payload inside a shard file."""

    def __init__(self, fh, offset: int, size: int):
        self.fh, self.start, self.size, self.pos = fh, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = min(max(base + pos, 0), self.size)
        return self.pos

    def readinto(self, buf) -> int:
        n = min(len(buf), self.size - self.pos)
        if n <= 0:
            return 0
        self.fh.seek(self.start + self.pos)
        got = self.fh.readinto(memoryview(buf)[:n])
        self.pos += got
        return got


def run_task(task: Task):
    """Decode one clip in a worker process; return its Frames or the failure reason."""
    from stages.formats.video import FrameSpec, VideoError, extract

    if not task.size:
        return "empty video (0 bytes)"
    spec = FrameSpec(task.short_side, task.fps, task.num_frames, task.quality, task.interpolation)
    with open(task.shard, "rb") as fh:
        if os.fstat(fh.fileno()).st_size < task.offset + task.size:
            return "payload truncated in the store"
        try:  # read in place: a long video is never loaded into memory whole
            frames = extract(Segment(fh, task.offset, task.size), spec, task.window, task.threads)
        except VideoError as exc:
            return str(exc)
    if not frames.jpegs:
        return "no frames decoded in the clip's window"
    return frames


def extract_frames(
    store: Store,
    source: Source,
    cfg: SourceConf,
    out_dir: Path,
    shard_bytes: int,
    workers: int | None = None,
) -> tuple[list[Row], dict]:
    """Decode every ok clip (in parallel processes) into frame rows; return rows and metrics."""
    workers = workers or default_workers()
    threads = "NONE" if workers > 1 else "AUTO"
    clips = store.rows()
    ok = [r for r in clips if r.status == "ok" and r.shard is not None]
    tasks = [task_for(store, r, source.frames(cfg, r), threads) for r in ok]
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(out_dir, shard_bytes)
    rows: list[Row] = [r for r in clips if r.status != "ok"]  # fetch failures pass through
    reasons: Counter = Counter()
    n_frames, n_bytes, seconds = 0, 0, 0.0
    try:
        results = pmap(run_task, tasks, kind="process", workers=workers, window=2 * workers)
        bar = tqdm(
            results,
            total=len(tasks),
            desc=f"frames@{source.name}",
            unit="clip",
            disable=not sys.stderr.isatty(),
            dynamic_ncols=True,
        )
        for clip, res in zip(ok, bar, strict=True):
            if isinstance(res, str):
                reasons[res] += 1
                rows.append(_failed(clip, res))
                continue
            for pos, rel, jpeg in zip(res.indices, res.times, res.jpegs, strict=True):
                item_id = f"{clip.item_id}/{pos:06d}"
                shard, offset = writer.add(
                    member_name(item_id, ".jpg"), io.BytesIO(jpeg), len(jpeg)
                )
                rows.append(
                    Row(
                        item_id=item_id,
                        source=clip.source,
                        source_id=clip.source_id,
                        url=clip.url,
                        sha256=None,
                        bytes=len(jpeg),
                        width=res.width,
                        height=res.height,
                        labels=list(clip.labels),
                        status="ok",
                        shard=shard,
                        offset=offset,
                        meta={
                            "clip": clip.item_id,
                            "frame": pos,
                            "t": rel,
                            "clip_frames": res.decoded,
                            "ext": ".jpg",
                        },
                    )
                )
                n_bytes += len(jpeg)
            n_frames += len(res.jpegs)
            seconds += res.times[-1] if res.times else 0.0
        writer.close()
    except BaseException:
        writer.abort()
        raise
    write_manifest(out_dir, rows)
    frames = [r for r in rows if r.status == "ok"]
    clips_ok = {r.meta["clip"]: r for r in frames}
    names = source.classes(cfg)
    metrics = {
        "clips": len(clips),
        "clips_ok": len(clips_ok),
        "clips_failed": sum(reasons.values()),
        "clips_not_fetched": len(clips) - len(ok),
        "reasons": dict(sorted(reasons.items())),
        "frames": n_frames,
        "bytes": n_bytes,
        "classes": class_counts(clips_ok.values(), names),
        "frames_per_class": class_counts(frames, names),
    }
    return rows, metrics


def _failed(clip: Row, reason: str) -> Row:
    """Return a clip's row marked corrupt (no payload), keeping its identity and labels."""
    return Row(
        item_id=clip.item_id,
        source=clip.source,
        source_id=clip.source_id,
        url=clip.url,
        sha256=clip.sha256,
        bytes=clip.bytes,
        labels=list(clip.labels),
        status="corrupt",
        reason=reason,
        meta={"clip": clip.item_id, **clip.meta},
    )


def main(argv: list[str] | None = None) -> int:
    """Run extract-frames for one video source."""
    run = start(argv, "stages.extract_frames", __doc__)
    args = run.args
    rows, metrics = extract_frames(
        Store(args.inp), run.source, run.cfg, args.out, run.section("store").shard_bytes
    )
    run.finish(metrics)
    log.info(
        "frames@%s: %d frames from %d clips, %d failed (%s)",
        args.source,
        metrics["frames"],
        metrics["clips_ok"],
        metrics["clips_failed"],
        ", ".join(f"{k} {v}" for k, v in metrics["reasons"].items()),
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    run_main(main)
