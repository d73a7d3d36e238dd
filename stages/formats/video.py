"""Decode a clip once with PyAV and turn it into resized JPEG frames.

Speed comes from doing what ffmpeg's own CLI does, in one process per clip: the decoder's
scaler resizes straight into full-range YUV 4:2:0 (no RGB round trip) and libjpeg-turbo
(simplejpeg) encodes those planes directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
import simplejpeg
from av.video.reformatter import Interpolation, VideoReformatter

from stages.core.selection import even_indices


class VideoError(Exception):
    """A clip that cannot be decoded; its message is the stable failure reason."""


@dataclass(frozen=True)
class FrameSpec:
    """What extract-frames makes of a clip."""

    short_side: int | None  # None: native size
    fps: float | None  # None: native rate
    num_frames: int | None  # None: every frame, else N evenly spaced frames
    quality: int
    interpolation: str  # swscale's filter name (conf: sources.<name>.frames.interpolation)


@dataclass
class Frames:
    """The frames extracted from one clip."""

    jpegs: list[bytes] = field(default_factory=list)  # empty when a sink took them
    sizes: list[int] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)  # positions among the window's frames
    times: list[float] = field(default_factory=list)  # seconds from the window's start
    width: int = 0
    height: int = 0
    decoded: int = 0  # frames in the window, counted by decoding


def out_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """Return the output size: short side as asked, aspect kept, both dimensions even."""
    if not short_side:
        return width - width % 2 or 2, height - height % 2 or 2
    scale = short_side / min(width, height)

    def even(v: float) -> int:
        return max(2, int(v / 2 + 0.5) * 2)

    return even(width * scale), even(height * scale)


def _reason(exc: BaseException) -> str:
    """Return a stable reason for a decoding error (no paths, no addresses)."""
    name = type(exc).__name__
    text = getattr(exc, "strerror", None) or str(exc).split(":")[0]
    return f"undecodable video: {name} ({text})" if text else f"undecodable video: {name}"


def _open(source):
    if hasattr(source, "seek"):
        source.seek(0)
    try:
        container = av.open(source, metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(_reason(exc)) from None
    if not container.streams.video:
        container.close()
        raise VideoError("no video stream")
    return container


def _window_frames(source, window: tuple[float, float] | None, fps: float | None, threads: str):
    """Yield (time from window start, frame) for the decoded frames in the window,
    resampled to `fps` when set (the frame on or after each output tick)."""
    container = _open(source)
    try:
        stream = container.streams.video[0]
        stream.thread_type = threads
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        half = 0.5 / float(rate)  # frames within half a frame of an edge count as on it
        start, end = window if window else (0.0, math.inf)
        tick = 0
        last_t = None
        for frame in container.decode(stream):
            t = frame.time
            if t is None or (last_t is not None and t <= last_t):
                # No timestamp, or a reset (camera files have them): keep the timeline going
                # at the nominal rate rather than ending the clip or skipping what follows.
                t = 0.0 if last_t is None else last_t + 2 * half
            last_t = t
            if t < start - half:
                continue
            if t >= end - half:
                break
            rel = t - start
            if fps:
                if rel < tick / fps - half:
                    continue
                tick = math.floor(rel * fps + 0.5) + 1
            yield rel, frame
    except av.FFmpegError as exc:
        raise VideoError(_reason(exc)) from None
    finally:
        container.close()


def _encode(scaler, frame, size: tuple[int, int], spec: FrameSpec) -> bytes:
    """Scale a frame into full-range YUV 4:2:0 and encode the planes as JPEG."""
    # BITEXACT + ACCURATE_RND: swscale's SIMD paths round differently per CPU otherwise, and
    # the same clip must give the same bytes on any machine.
    flags = Interpolation[spec.interpolation] | Interpolation.BITEXACT | Interpolation.ACCURATE_RND
    out = scaler.reformat(
        frame, width=size[0], height=size[1], format="yuvj420p", interpolation=flags
    )
    planes = []
    for plane in out.planes:
        arr = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        planes.append(arr[:, : plane.width])
    return simplejpeg.encode_jpeg_yuv_planes(*planes, quality=spec.quality)


def extract(
    source,
    spec: FrameSpec,
    window: tuple[float, float] | None = None,
    threads: str = "AUTO",
    sink: Callable[[bytes], None] | None = None,
    *,
    hold_bytes: int,
) -> Frames:
    """Decode a clip (a path or a binary file object) once; return its window's frames as JPEGs.

    `threads` is the decoder's thread type: AUTO for one clip at a time, NONE when clips run
    in parallel processes (one per core) so decoders do not fight over cores. With `sink`,
    each JPEG goes to it as soon as it is made (a long video never sits in memory) and
    `Frames.sizes` lists their sizes instead of `jpegs`. N-of-M sampling holds up to
    `hold_bytes` of decoded frames, and decodes twice past that.
    """
    res = Frames()
    sink = sink or res.jpegs.append
    size = None
    # One scaler per clip: frame.reformat() would build a new swscale context every frame.
    scaler = VideoReformatter()

    def encode(rel: float, pos: int, frame) -> None:
        nonlocal size
        if size is None:
            size = out_size(frame.width, frame.height, spec.short_side)
            res.width, res.height = size
        jpeg = _encode(scaler, frame, size, spec)
        sink(jpeg)
        res.sizes.append(len(jpeg))
        res.indices.append(pos)
        res.times.append(round(rel, 6))

    if not spec.num_frames:
        for pos, (rel, frame) in enumerate(_window_frames(source, window, spec.fps, threads)):
            encode(rel, pos, frame)
        res.decoded = len(res.indices)
        return res
    held, held_bytes, two_pass = [], 0, False
    for rel, frame in _window_frames(source, window, spec.fps, threads):
        held_bytes += frame.width * frame.height * 3 // 2
        if held_bytes > hold_bytes:
            two_pass, held = True, []
            break
        held.append((rel, frame))
    if not two_pass:
        res.decoded = len(held)
        for pos in even_indices(len(held), spec.num_frames):
            rel, frame = held[pos]
            encode(rel, pos, frame)
        return res
    total = sum(1 for _ in _window_frames(source, window, spec.fps, threads))
    wanted = set(even_indices(total, spec.num_frames))
    for pos, (rel, frame) in enumerate(_window_frames(source, window, spec.fps, threads)):
        if pos in wanted:
            encode(rel, pos, frame)
    res.decoded = total
    return res
