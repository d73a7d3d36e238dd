"""Montage and position geometry: the pre-annotation logs, montages cut into frames, raw
frames cut into positions, and positions stitched back into frames.

A montage lays `montage_len` frames out in rows of `row_length`, with `x_buffer`/`y_buffer`
pixels of padding on every edge and between tiles (the layout of caliban-toolbox's montage
maker, read from `{identifier}_montage_maker_log.json`). Frame `t` sits at row `t //
row_length`, column `t % row_length`. The last row may be short: its padding tiles are not
frames and are dropped (the original emitted them as blank frames).

Positions come from caliban-toolbox's overlapping chopper (`{identifier}_overlapping_chopper_
log.json`): a frame of `original_y` x `original_x` is split into `num_y_segments` x
`num_x_segments` steps of `original // segments` pixels; position (x, y) is the step plus
`overlapping_*_pix` on each side, zero-padded beyond the frame's edges.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.core.errors import MetadataError

MONTAGE_KEYS = ("montage_len", "num_x_segments", "num_y_segments", "row_length", "x_buffer")


@dataclass(frozen=True)
class Geometry:
    """How one position's frames were laid out in its montages."""

    montage_len: int
    row_length: int
    x_buffer: int
    y_buffer: int
    num_x_segments: int = 1
    num_y_segments: int = 1
    montages_in_pos: int = 1

    def __post_init__(self) -> None:
        for key in ("montage_len", "row_length", "num_x_segments", "num_y_segments"):
            if getattr(self, key) < 1:
                raise MetadataError(f"montage log: {key} must be >= 1, not {getattr(self, key)}")
        if self.x_buffer < 0 or self.y_buffer < 0:
            raise MetadataError("montage log: buffers must be >= 0")

    @property
    def rows(self) -> int:
        """Return the number of tile rows in a montage."""
        return math.ceil(self.montage_len / self.row_length)

    def tile_size(self, height: int, width: int) -> tuple[int, int]:
        """Return (h, w) of one frame in a montage of this size."""
        h = (height - (self.rows + 1) * self.y_buffer) // self.rows
        w = (width - (self.row_length + 1) * self.x_buffer) // self.row_length
        if h < 1 or w < 1:
            raise MetadataError(
                f"a {width}x{height} montage cannot hold {self.rows} x {self.row_length} "
                f"tiles with buffers {self.x_buffer}, {self.y_buffer}"
            )
        return h, w

    def tile_box(self, t: int, h: int, w: int) -> tuple[int, int, int, int]:
        """Return frame t's (y0, y1, x0, x1) in the montage."""
        r, c = divmod(t, self.row_length)
        y0 = self.y_buffer + (self.y_buffer + h) * r
        x0 = self.x_buffer + (self.x_buffer + w) * c
        return y0, y0 + h, x0, x0 + w


def read_montage_log(path: Path) -> Geometry:
    """Read `{identifier}_montage_maker_log.json` into a Geometry."""
    data = _log_object(path, "montage")
    missing = [k for k in (*MONTAGE_KEYS, "y_buffer") if k not in data]
    if missing:
        raise MetadataError(f"{path}: the montage log lacks {missing}")
    fields = (*MONTAGE_KEYS, "y_buffer", "montages_in_pos")
    values = {k: data[k] for k in fields if k in data}
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values.values()):
        raise MetadataError(f"{path}: montage log values must be integers: {values}")
    return Geometry(**values)


def chop(montage: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Return a montage's frames, (montage_len, h, w[, channels]), in frame order."""
    h, w = geometry.tile_size(*montage.shape[:2])
    frames = []
    for t in range(geometry.montage_len):
        y0, y1, x0, x1 = geometry.tile_box(t, h, w)
        frames.append(montage[y0:y1, x0:x1])
    return np.stack(frames)


@dataclass(frozen=True)
class Chopper:
    """How raw frames were cut into overlapping positions before montages were made."""

    original_y: int
    original_x: int
    num_y_segments: int
    num_x_segments: int
    overlapping_y_pix: int
    overlapping_x_pix: int

    def __post_init__(self) -> None:
        for key in ("original_y", "original_x", "num_y_segments", "num_x_segments"):
            if getattr(self, key) < 1:
                raise MetadataError(f"chopper log: {key} must be >= 1, not {getattr(self, key)}")
        if self.overlapping_y_pix < 0 or self.overlapping_x_pix < 0:
            raise MetadataError("chopper log: overlaps must be >= 0")
        if self.step_y < 1 or self.step_x < 1:
            raise MetadataError("chopper log: more segments than pixels")

    @property
    def step_y(self) -> int:
        """Return the rows between two positions' starts."""
        return self.original_y // self.num_y_segments

    @property
    def step_x(self) -> int:
        """Return the columns between two positions' starts."""
        return self.original_x // self.num_x_segments

    @property
    def piece_shape(self) -> tuple[int, int]:
        """Return (h, w) of one position."""
        return self.step_y + 2 * self.overlapping_y_pix, self.step_x + 2 * self.overlapping_x_pix

    def positions(self) -> list[tuple[int, int]]:
        """Return every (x, y) position, x first (the original's loop order)."""
        return [(x, y) for x in range(self.num_x_segments) for y in range(self.num_y_segments)]

    def piece(self, frame: np.ndarray, x: int, y: int) -> np.ndarray:
        """Return position (x, y) of a full frame, zero-padded beyond the frame's edges."""
        if frame.shape[:2] != (self.original_y, self.original_x):
            raise MetadataError(
                f"a raw frame is {frame.shape[1]}x{frame.shape[0]}, the chopper log says "
                f"{self.original_x}x{self.original_y}"
            )
        h, w = self.piece_shape
        y0, x0 = y * self.step_y - self.overlapping_y_pix, x * self.step_x - self.overlapping_x_pix
        out = np.zeros((h, w, *frame.shape[2:]), frame.dtype)
        sy0, sx0 = max(y0, 0), max(x0, 0)
        sy1, sx1 = min(y0 + h, self.original_y), min(x0 + w, self.original_x)
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = frame[sy0:sy1, sx0:sx1]
        return out

    @property
    def covered(self) -> tuple[int, int]:
        """Return (h, w) of the part of a frame the positions cover (from the top left): when
        a frame's size leaves a remainder beyond the last position's overlap, those rows and
        columns were never shown to annotators."""
        return (
            min(self.original_y, self.num_y_segments * self.step_y + self.overlapping_y_pix),
            min(self.original_x, self.num_x_segments * self.step_x + self.overlapping_x_pix),
        )

    def owned(self, x: int, y: int) -> tuple[int, int, int, int]:
        """Return the (y0, y1, x0, x1) of the full frame that position (x, y) fills when
        stitching: its step, the last row and column reaching on to the covered edge."""
        h, w = self.covered
        y0, x0 = y * self.step_y, x * self.step_x
        y1 = y0 + self.step_y if y < self.num_y_segments - 1 else h
        x1 = x0 + self.step_x if x < self.num_x_segments - 1 else w
        return y0, y1, x0, x1


CHOPPER_KEYS = ("original_y", "original_x", "num_y_segments", "num_x_segments")
CHOPPER_PIX = ("overlapping_y_pix", "overlapping_x_pix")


def _log_object(path: Path, what: str) -> dict:
    """Read a log file as a JSON object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MetadataError(f"{path}: cannot read the {what} log: {exc}") from None
    if not isinstance(data, dict):
        raise MetadataError(f"{path}: the {what} log is not a JSON object")
    return data


def read_chopper_log(path: Path) -> Chopper:
    """Read `{identifier}_overlapping_chopper_log.json` into a Chopper."""
    data = _log_object(path, "overlapping chopper")
    keys = (*CHOPPER_KEYS, *CHOPPER_PIX)
    missing = [k for k in keys if k not in data]
    if missing:
        raise MetadataError(f"{path}: the overlapping chopper log lacks {missing}")
    values = {k: data[k] for k in keys}
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values.values()):
        raise MetadataError(f"{path}: overlapping chopper log values must be integers: {values}")
    return Chopper(**values)


def stitch(pieces: dict[tuple[int, int], np.ndarray], chopper: Chopper) -> np.ndarray:
    """Return full label frames (T, covered h, covered w) from each position's label frames
    (T, piece h, piece w); labels stay unique across positions and fixed across frames.

    Each position fills the part of the frames it owns (`Chopper.owned`); its labels there are
    renumbered, over all frames together, after the previous positions' (x first), so equal
    values from two positions never merge and a cell keeps its label from frame to frame. A
    cell cut by a seam keeps one label per side.
    """
    oy, ox = chopper.overlapping_y_pix, chopper.overlapping_x_pix
    frames = next(iter(pieces.values())).shape[0]
    out = np.zeros((frames, *chopper.covered), np.uint32)
    offset = 0
    for x, y in chopper.positions():
        y0, y1, x0, x1 = chopper.owned(x, y)
        py0, px0 = y0 - y * chopper.step_y + oy, x0 - x * chopper.step_x + ox
        part = pieces[(x, y)][:, py0 : py0 + (y1 - y0), px0 : px0 + (x1 - x0)].astype(np.int64)
        values, inverse = np.unique(part, return_inverse=True)
        ranks = np.arange(len(values)) + offset + (0 if values[0] == 0 else 1)
        ranks[values == 0] = 0
        out[:, y0:y1, x0:x1] = ranks[inverse.reshape(part.shape)]
        offset = max(offset, int(ranks.max(initial=0)))
    return out


NUMBER = re.compile(r"([0-9]+)")


def natural_key(name: str) -> tuple[list, str]:
    """Return a sort key that orders `frame_2` before `frame_10` (the original's order); names
    equal but for case or leading zeros are ordered by the name itself, never by the disk."""
    parts = NUMBER.split(name)  # text at even positions, ASCII digits at odd ones
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)], name
