"""Montage geometry: the pre-annotation step's log, and a montage cut back into its frames.

A montage lays `montage_len` frames out in rows of `row_length`, with `x_buffer`/`y_buffer`
pixels of padding on every edge and between tiles (the layout of caliban-toolbox's montage
maker, read from `{identifier}_montage_maker_log.json`). Frame `t` sits at row `t //
row_length`, column `t % row_length`. The last row may be short: its padding tiles are not
frames and are dropped (the original emitted them as blank frames).
"""

from __future__ import annotations

import json
import math
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
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MetadataError(f"{path}: cannot read the montage log: {exc}") from None
    if not isinstance(data, dict):
        raise MetadataError(f"{path}: the montage log is not a JSON object")
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
