"""extract-frames stage: decode each fetched clip once into resized JPEG frames in the store.

Each frame is an item (`<clip id>/<position:06d>`) whose meta names its clip, its position
among the clip window's frames and its time from the window's start. A clip that cannot be
decoded is one row with status `corrupt` and the reason; the stage goes on with the rest.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import av

from stages.core.config import FramesConf, SourceConf
from stages.core.errors import StoreError
from stages.core.executor import Executor, LocalExecutor
from stages.core.files import atomic_path
from stages.core.metrics import class_counts
from stages.core.parallel import default_workers, progress
from stages.core.store import (
    HashingReader,
    Packer,
    Row,
    Segment,
    Store,
    layout_key,
    member_name,
    shard_group,
    write_manifest,
)
from stages.formats.video import FrameSpec, VideoError, extract
from stages.pipeline.entry import run_main, start
from stages.sources import Source

log = logging.getLogger("stages.extract_frames")
SPOOL = ".spool"
HOLD_BYTES = 1 << 30  # decoded frames N-of-M sampling may hold, shared by the workers


@dataclass(frozen=True)
class Task:
    """One clip to decode: where its bytes are, and what to make of them (picklable)."""

    shard: str
    offset: int
    size: int
    spec: FrameSpec
    window: tuple[float, float] | None
    threads: str
    spool: str  # where the worker writes the clip's JPEGs, one after another
    hold_bytes: int


def task_for(store: Store, row: Row, cfg: FramesConf, threads: str, spool: Path, hold: int):
    """Return the decoding task for one fetched clip."""
    window = row.meta.get("window")
    return Task(
        shard=str(store.shard_path(row)),
        offset=row.offset,
        size=row.bytes,
        spec=FrameSpec(
            cfg.short_side, cfg.fps, cfg.num_frames, cfg.quality, cfg.interpolation.value
        ),
        window=(float(window[0]), float(window[1])) if window else None,
        threads=threads,
        spool=str(spool),
        hold_bytes=hold,
    )


def run_task(task: Task):
    """Decode one clip in a worker process; return its Frames (JPEGs in the spool file) or
    the reason it failed. Any error is the clip's: the stage goes on with the others."""
    if not task.size:
        return "empty video (0 bytes)"
    with open(task.shard, "rb") as fh:
        if os.fstat(fh.fileno()).st_size < task.offset + task.size:
            raise StoreError(f"{task.shard} is truncated: run the fetch stage again")
        try:  # read in place and spool the JPEGs: a long video never sits in memory
            with atomic_path(task.spool) as tmp, open(tmp, "wb") as out:
                frames = extract(
                    Segment(fh, task.offset, task.size),
                    task.spec,
                    task.window,
                    task.threads,
                    sink=out.write,
                    hold_bytes=task.hold_bytes,
                )
        except VideoError as exc:
            return str(exc)
        except Exception as exc:  # PyAV, swscale, the encoder: many types for hostile input
            if isinstance(exc, MemoryError | OSError) and not isinstance(exc, av.FFmpegError):
                raise  # the machine's trouble (PyAV's errors may be OSErrors too), not the clip's
            return f"undecodable video: {type(exc).__name__}"
    if not frames.indices:
        return "no frames decoded in the clip's window"
    return frames


def extract_frames(
    store: Store,
    source: Source,
    cfg: SourceConf,
    out_dir: Path,
    shard_bytes: int,
    workers: int | None = None,
    executor: Executor | None = None,
) -> tuple[list[Row], dict]:
    """Decode every ok clip into frame rows; return rows and metrics.

    Each clip is a task of `executor` (default: `workers` local processes): it spools its
    JPEGs into the output dir and returns their sizes; this process packs them in order.
    """
    executor = executor or LocalExecutor(workers)
    workers = executor.slots if not executor.remote else default_workers()
    threads = "NONE" if workers > 1 or executor.remote else "AUTO"
    clips = store.rows()
    # Clips in their store's layout (class, then selection rank), so each class's frames fill
    # shards of their own and a raised cap appends to the class's last one (see store.Packer).
    ok = [r for r in clips if r.status == "ok" and r.shard is not None]
    ok.sort(key=layout_key(source.rank(cfg)))
    out_dir.mkdir(parents=True, exist_ok=True)
    executor.check_visible(out_dir, files={store.shard_path(r) for r in ok[:1]})
    spool = out_dir.absolute() / SPOOL  # inside the output: a killed run's leftovers go with it
    spool.mkdir(exist_ok=True)
    hold = HOLD_BYTES // workers  # N-of-M sampling's decoded frames, per worker
    tasks = [
        task_for(store, r, source.frames(cfg, r), threads, spool / f"{i:08d}.jpgs", hold)
        for i, r in enumerate(ok)
    ]
    packer = Packer(out_dir, shard_bytes)
    rows: list[Row] = [r for r in clips if r.status != "ok"]  # fetch failures pass through
    reasons: Counter = Counter()
    n_frames, n_bytes = 0, 0
    try:
        results = executor.map(run_task, tasks, kind="process", lost=_decoder_died)
        bar = progress(results, total=len(tasks), desc=f"frames@{source.name}", unit="clip")
        for clip, task, res in zip(ok, tasks, bar, strict=True):
            if isinstance(res, str):
                reasons[res] += 1
                rows.append(_failed(clip, res))
                Path(task.spool).unlink(missing_ok=True)
                continue
            group = shard_group(clip)
            with open(task.spool, "rb") as jpegs:
                for pos, rel, size in zip(res.indices, res.times, res.sizes, strict=True):
                    item_id = f"{clip.item_id}/{pos:06d}"
                    frame = HashingReader(jpegs)  # one frame: hashed as it is packed
                    shard, offset = packer.add(group, member_name(item_id, ".jpg"), frame, size)
                    rows.append(
                        Row(
                            item_id=item_id,
                            source=clip.source,
                            source_id=clip.source_id,
                            url=clip.url,
                            sha256=frame.hexdigest(),
                            bytes=size,
                            width=res.width,
                            height=res.height,
                            labels=list(clip.labels),
                            status="ok",
                            shard=shard,
                            offset=offset,
                            meta={
                                **clip.meta,  # what groups the clip for the splits, too
                                "clip": clip.item_id,
                                "frame": pos,
                                "t": rel,
                                "clip_frames": res.decoded,
                                "ext": ".jpg",
                            },
                        )
                    )
                    n_bytes += size
            Path(task.spool).unlink()
            n_frames += len(res.indices)
        packer.close()
    except BaseException:
        packer.abort()
        raise
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    names = source.names(cfg, store)
    write_manifest(out_dir, rows, names)
    frames = [r for r in rows if r.status == "ok"]
    clips_ok = {r.meta["clip"]: r for r in frames}
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


def _decoder_died(task: Task) -> str:
    """Return the reason of a clip whose decoding kept killing its process."""
    return "decoder process died"


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
    """Run extract-frames for one source with frames (video, or the source's own)."""
    run = start(argv, "stages.extract_frames", __doc__)
    args = run.args
    store, shard_bytes = Store(args.inp), run.section("store").shard_bytes
    with run.executor() as ex:
        if "extract-frames" in run.source.own_stages:  # frames that are not decoded video
            rows, metrics = run.source.extract(run.cfg, store, args.out, shard_bytes, ex)
        else:
            rows, metrics = extract_frames(
                store, run.source, run.cfg, args.out, shard_bytes, executor=ex
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
