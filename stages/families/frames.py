"""Frames from decoded clips: each fetched clip decoded once into resized JPEG frames.

Each frame is an item (`<clip id>/<position:06d>`) whose meta names its clip, its position
among the clip window's frames and its time from the window's start. A clip that cannot be
decoded is one row with status `corrupt` and the reason; the stage goes on with the rest.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import av

from stages.core.config import FramesConf, SourceConf
from stages.core.errors import StoreError
from stages.core.files import atomic_path
from stages.core.metrics import class_counts
from stages.core.store import (
    HashingReader,
    Packer,
    Row,
    Segment,
    layout_key,
    member_name,
    shard_group,
    write_manifest,
)
from stages.families import Extractor, Inputs
from stages.formats.video import FrameSpec, VideoError, extract


@dataclass(frozen=True)
class Task:
    """One clip to decode: where its bytes are, and what to make of them (picklable)."""

    shard: str
    offset: int
    size: int
    spec: FrameSpec
    window: tuple[float, float] | None
    threads: str
    hold_bytes: int


def run_task(job: tuple[Task, str]):
    """Decode one clip in a worker process into its spool file; return its Frames (the JPEGs
    are in the spool file) or the reason it failed. Any error is the clip's: the stage goes
    on with the others."""
    task, spool = job
    if not task.size:
        return "empty video (0 bytes)"
    with open(task.shard, "rb") as fh:
        if os.fstat(fh.fileno()).st_size < task.offset + task.size:
            raise StoreError(f"{task.shard} is truncated: run the fetch stage again")
        try:  # read in place and spool the JPEGs: a long video never sits in memory
            with atomic_path(spool) as tmp, open(tmp, "wb") as out:
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


def decoder_died(job: tuple[Task, str]) -> str:
    """Return the reason of a clip whose decoding kept killing its process."""
    return "decoder process died"


class VideoExtractor(Extractor):
    """Clips decoded into frames, one task per clip, packed in the store's layout."""

    def settings(self, cfg: SourceConf, row: Row) -> FramesConf:
        """Return the extract-frames settings for one clip (hook: per-camera overrides)."""
        return cfg.frames

    def task(self, inputs: Inputs, row: Row, threads: str, hold: int) -> Task:
        """Return the decoding task for one fetched clip."""
        cfg = self.settings(inputs.cfg, row)
        window = row.meta.get("window")
        return Task(
            shard=str(inputs.store.shard_path(row)),
            offset=row.offset,
            size=row.bytes,
            spec=FrameSpec(
                cfg.short_side, cfg.fps, cfg.num_frames, cfg.quality, cfg.interpolation.value
            ),
            window=(float(window[0]), float(window[1])) if window else None,
            threads=threads,
            hold_bytes=hold,
        )

    def run(self, inputs: Inputs) -> dict:
        """Decode every ok clip into frame rows; write the store; return its metrics.

        Each clip is a task of the executor: it spools its JPEGs into the output dir and
        returns their sizes; this process packs them in order."""
        store, out_dir, ex = inputs.store, inputs.out_dir, inputs.executor
        per_machine = ex.tasks_per_machine
        threads = "NONE" if per_machine > 1 else "AUTO"  # decoders must not fight over cores
        clips = store.rows()
        # Clips in their store's layout (class, then selection rank), so each class's frames
        # fill shards of their own and a raised cap appends to the class's last one.
        ok = [r for r in clips if r.status == "ok" and r.shard is not None]
        ok.sort(key=layout_key(inputs.source.rank(inputs.cfg)))
        out_dir.mkdir(parents=True, exist_ok=True)
        ex.check_visible(out_dir, files={store.shard_path(r) for r in ok[:1]})
        hold = ex.frame_memory // per_machine  # N-of-M sampling's decoded frames, per task
        tasks = [self.task(inputs, r, threads, hold) for r in ok]
        packer = Packer(out_dir, inputs.shard_bytes)
        rows: list[Row] = [r for r in clips if r.status != "ok"]  # fetch failures pass through
        reasons: Counter = Counter()
        n_frames, n_bytes = 0, 0

        def pack(i: int, res, spool: Path) -> None:
            nonlocal n_frames, n_bytes
            if isinstance(res, str):
                reasons[res] += 1
                rows.append(failed(ok[i], res))
                return
            rows.extend(frame_rows(ok[i], res, spool, packer))
            n_bytes += sum(res.sizes)
            n_frames += len(res.indices)

        ex.pack_spooled(
            run_task,
            tasks,
            out_dir,
            packer,
            pack,
            desc=f"frames@{inputs.source.name}",
            unit="clip",
            lost=decoder_died,
        )
        names = inputs.names()
        write_manifest(out_dir, rows, names)
        frames = [r for r in rows if r.status == "ok"]
        clips_ok = {r.meta["clip"]: r for r in frames}
        return {
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


def frame_rows(clip: Row, res, spool, packer: Packer) -> list[Row]:
    """Pack one clip's spooled JPEGs in order; return their rows."""
    group, out = shard_group(clip), []
    with open(spool, "rb") as jpegs:
        for pos, rel, size in zip(res.indices, res.times, res.sizes, strict=True):
            item_id = f"{clip.item_id}/{pos:06d}"
            frame = HashingReader(jpegs)  # one frame: hashed as it is packed
            shard, offset = packer.add(group, member_name(item_id, ".jpg"), frame, size)
            out.append(
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
    return out


def failed(clip: Row, reason: str) -> Row:
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
