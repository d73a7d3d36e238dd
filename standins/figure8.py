"""Figure Eight / DeepCell fixtures: synthetic label movies, montages made from them, and the
annotation artefacts (holes, specks) cleaning has to fix.

Montages are made by the same geometry the product cuts them with, so `chop(make(movie)) ==
movie` is a property test of the product's side. (The Figure Eight API stand-in joins this
module with the source's fetch stage.)
"""

from __future__ import annotations

import csv
import io
import json
import zipfile

import numpy as np

from stages.sources.figure8.montage import Geometry


def label_movie(
    frames: int, height: int, width: int, cells: int, seed: int = 0, max_label: int = 255
) -> np.ndarray:
    """Return (frames, height, width) labels: drifting discs, each cell one random label."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.arange(1, max_label + 1), size=min(cells, max_label), replace=False)
    radius = rng.integers(5, 10, size=len(ids))
    cy = rng.uniform(0, height, size=len(ids))
    cx = rng.uniform(0, width, size=len(ids))
    dy, dx = rng.normal(0, 1.5, size=(2, len(ids)))
    out = np.zeros((frames, height, width), label_dtype_for(max_label))
    for t in range(frames):
        for i, label in enumerate(ids):
            y, x, r = cy[i] + dy[i] * t, cx[i] + dx[i] * t, int(radius[i])
            y0, y1 = max(int(y) - r, 0), min(int(y) + r + 1, height)
            x0, x1 = max(int(x) - r, 0), min(int(x) + r + 1, width)
            if y0 >= y1 or x0 >= x1:
                continue
            yy, xx = np.ogrid[y0:y1, x0:x1]
            disc = (yy - y) ** 2 + (xx - x) ** 2 <= r * r
            out[t, y0:y1, x0:x1][disc] = label
    return out


def label_dtype_for(max_label: int):
    """Return a dtype that holds labels up to max_label."""
    return np.uint8 if max_label <= 255 else np.uint16 if max_label <= 65535 else np.uint32


def add_artefacts(labels: np.ndarray, seed: int = 0, holes: int = 20, specks: int = 20):
    """Punch small holes into cells and scatter small specks, as annotators leave them."""
    rng = np.random.default_rng(seed)
    out = labels.copy()
    frames, height, width = out.shape
    for t in range(frames):
        ys, xs = np.nonzero(out[t])
        if len(ys) == 0:
            continue
        for k in rng.integers(0, len(ys), size=holes):
            y, x = ys[k], xs[k]
            size = int(rng.integers(1, 3))
            out[t, y : y + size, x : x + size] = 0
        for _ in range(specks):
            y, x = rng.integers(0, height - 3), rng.integers(0, width - 3)
            if not out[t, y : y + 3, x : x + 3].any():
                size = int(rng.integers(1, 3))
                out[t, y : y + size, x : x + size] = rng.integers(1, int(out.max()) + 1)
    return out


def make_montage(frames: np.ndarray, geometry: Geometry, fill: int = 0) -> np.ndarray:
    """Lay frames out in rows of row_length with buffers on every edge (the montage maker)."""
    t, h, w = frames.shape[:3]
    if t != geometry.montage_len:
        raise ValueError(f"{t} frames for a montage of {geometry.montage_len}")
    height = geometry.rows * h + (geometry.rows + 1) * geometry.y_buffer
    width = geometry.row_length * w + (geometry.row_length + 1) * geometry.x_buffer
    out = np.full((height, width, *frames.shape[3:]), fill, frames.dtype)
    for i in range(t):
        y0, y1, x0, x1 = geometry.tile_box(i, h, w)
        out[y0:y1, x0:x1] = frames[i]
    return out


REPORT_COLUMNS = (
    "_unit_id", "_created_at", "_golden", "_id", "_trust", "_worker_id",
    "annotation", "broken_link", "identifier", "image_url",
)  # fmt: skip


def report_zip(rows: list[dict], member: str = "f1363594.csv", columns=REPORT_COLUMNS) -> bytes:
    """Return a job report as Figure Eight sends it: a zip holding one CSV."""
    text = io.StringIO()
    writer = csv.DictWriter(
        text, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    writer.writerows(rows)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
        zf.writestr(info, text.getvalue())
    return buf.getvalue()


def report_row(n: int, image_url: str, annotation_url: str | None, broken="false") -> dict:
    """Return one report row (a judgment) for an uploaded montage."""
    annotation = json.dumps({"url": annotation_url}) if annotation_url else ""
    return {
        "_unit_id": 1000 + n,
        "_created_at": "2019-06-01 12:00:00",
        "_golden": "false",
        "_id": 5000 + n,
        "_trust": "0.9",
        "_worker_id": 42,
        "annotation": annotation,
        "broken_link": broken,
        "identifier": "3D_example",
        "image_url": image_url,
    }
