"""Figure Eight / DeepCell fixtures: synthetic label movies, montages made from them, and the
annotation artefacts (holes, specks) cleaning has to fix.

Montages and positions are laid out by this module's own arithmetic, written from the
format's description (caliban-toolbox's montage maker and overlapping chopper) and sharing no
code with the product, so `chop(make(movie)) == movie` checks the product's side against an
independent maker. `generate_job` makes a whole job (raw frames, logs, annotated montages) and
`Figure8Standin` serves its API: the zipped report (`GET /v1/jobs/<id>.csv?type=`,
`Authorization: Token token=<key>`, 202 while queued) and the annotation images. `python -m
standins.figure8 input|serve` for the demo.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
from PIL import Image

from standins.http import Handler, Standin, corrupted, serve_until_signalled


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


@dataclass(frozen=True)
class Layout:
    """How a montage tiles a position's frames: rows of `row_length` frames, with `x_buffer`
    and `y_buffer` pixels of padding before, between and after the tiles."""

    montage_len: int
    row_length: int
    x_buffer: int
    y_buffer: int


def tile_corner(t: int, h: int, w: int, layout) -> tuple[int, int]:
    """Return the (top, left) pixel of frame t's tile in a montage of h x w frames."""
    row, col = t // layout.row_length, t % layout.row_length
    # Above the tile: row + 1 buffers and row tiles; left of it: col + 1 buffers and col tiles.
    top = (row + 1) * layout.y_buffer + row * h
    left = (col + 1) * layout.x_buffer + col * w
    return top, left


def make_montage(frames: np.ndarray, layout, fill: int = 0) -> np.ndarray:
    """Lay frames out in rows of row_length with buffers on every edge (the montage maker);
    `layout` is a Layout, or anything with the same four attributes."""
    t, h, w = frames.shape[:3]
    if t != layout.montage_len:
        raise ValueError(f"{t} frames for a montage of {layout.montage_len}")
    rows = -(-t // layout.row_length)  # a short last row still takes a full row's height
    height = rows * h + (rows + 1) * layout.y_buffer
    width = layout.row_length * w + (layout.row_length + 1) * layout.x_buffer
    out = np.full((height, width, *frames.shape[3:]), fill, frames.dtype)
    for i in range(t):
        top, left = tile_corner(i, h, w, layout)
        out[top : top + h, left : left + w] = frames[i]
    return out


@dataclass(frozen=True)
class Grid:
    """How raw frames are cut into overlapping positions (the overlapping chopper): `ny` x `nx`
    steps of `height // ny` x `width // nx` pixels, each widened by the overlap on every side."""

    height: int
    width: int
    ny: int
    nx: int
    overlap_y: int
    overlap_x: int

    def positions(self) -> list[tuple[int, int]]:
        """Return every (x, y) position, x in the outer loop (the chopper's order)."""
        return [(x, y) for x in range(self.nx) for y in range(self.ny)]

    def crop(self, frame: np.ndarray, x: int, y: int) -> np.ndarray:
        """Return position (x, y) of a full frame, zeros where it reaches beyond the frame."""
        sy, sx = self.height // self.ny, self.width // self.nx
        oy, ox = self.overlap_y, self.overlap_x
        # The chopper pads the whole frame by the overlap first, then cuts equal windows.
        padded = np.pad(frame, ((oy, oy), (ox, ox), *[(0, 0)] * (frame.ndim - 2)))
        return padded[y * sy : y * sy + sy + 2 * oy, x * sx : x * sx + sx + 2 * ox]


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


# ---------------------------------------------------------------- a whole job, and its API

IDENTIFIER = "3D_example"
JOB_ID = 1363594
REPORT_TYPES = ("full", "aggregated", "json", "gold_report", "workset", "source")
UPLOADS = "https://uploads.example.org/figure8"  # where the montages were uploaded from


@dataclass
class Job:
    """A generated crowd-annotation job: the input folder, the annotations, the truth."""

    identifier: str
    job_id: int
    inputs: dict[str, bytes]  # relative path in the input folder -> bytes
    annotations: dict[str, bytes]  # served file name -> PNG
    montages: list[tuple[int, int, int]]  # (x, y, part) of every uploaded montage
    truth: np.ndarray  # (frames, H, W) labels of the full movie
    # Per (x, y, part): the position's label frames, before and after artefacts were added.
    clean: dict[tuple[int, int, int], np.ndarray] = field(default_factory=dict)
    dirty: dict[tuple[int, int, int], np.ndarray] = field(default_factory=dict)
    special: bool = False
    grid: Grid | None = None  # how the raw frames were cut into positions

    def write_inputs(self, root: Path) -> None:
        """Write the raw frames and the pre-annotation logs under root."""
        for rel, data in sorted(self.inputs.items()):
            path = Path(root) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.is_file() or path.read_bytes() != data:
                # A new file, renamed into place: the old one may be a hard link into DVC's
                # cache (a tracked input), which writing in place would change too.
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)

    def report_rows(self, base: str) -> list[dict]:
        """Return the full report's rows, annotation URLs under `base` (the stand-in)."""
        rows, n = [], 0

        def add(x, y, part, ann, broken="false", ident=None, upload=None):
            nonlocal n
            url = upload or f"{UPLOADS}/{self.identifier}_x_{x}_y_{y}_montage_{part}.png"
            row = report_row(n, url, f"{base}/annotations/{ann}" if ann else None, broken)
            row["identifier"] = ident or self.identifier
            rows.append(row)
            n += 1

        last = self.montages[-1]
        spellings = ["false", "False", "0", "", "FALSE"]
        if self.special:
            first = self.montages[0]
            add(*first, None, broken="1")  # broken at first, re-uploaded and annotated below
            add(*self.montages[1], "superseded.png")  # an earlier judgment: the later one wins
            add(
                0,
                0,
                0,
                "x.png",
                ident="other_set",
                upload=f"{UPLOADS}/other_set_x_0_y_0_montage_0.png",
            )
        for i, (x, y, part) in enumerate(self.montages):
            if self.special and (x, y, part) == last:
                add(x, y, part, "gone_annotation.png")  # 404 on the server
                continue
            add(x, y, part, annotation_name(self.identifier, x, y, part), spellings[i % 5])
        if self.special:
            add(9, 9, 0, None, broken="TRUE")  # never annotated: stays broken
        return rows


def annotation_name(identifier: str, x: int, y: int, part: int) -> str:
    """Return the served file name of a montage's annotation."""
    return f"{identifier}_x_{x}_y_{y}_montage_{part}_annotation.png"


def raw_frame(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return a 16-bit raw frame showing the cells of a label frame, with noise."""
    img = 1000 + rng.normal(0, 60, labels.shape)
    img[labels > 0] += 2500 + (labels[labels > 0].astype(np.float64) % 7) * 150
    return np.clip(img, 0, 65535).astype(np.uint16)


def encode_png(arr: np.ndarray) -> bytes:
    """Return an array as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def annotation_rgb(labels: np.ndarray) -> np.ndarray:
    """Return labels (<= 255) as an RGB annotation: red is the label, green and blue vary."""
    lab = labels.astype(np.uint16)
    return np.stack([lab, (lab * 37) % 256, (lab * 91) % 256], axis=-1).astype(np.uint8)


def generate_job(
    *,
    seed: int = 0,
    frames: int = 8,
    height: int = 96,
    width: int = 128,
    segments: tuple[int, int] = (2, 2),
    overlap_perc: int = 10,
    montage_len: int = 4,
    row_length: int = 3,
    buffer: int = 4,
    cells: int = 24,
    special: bool = True,
    identifier: str = IDENTIFIER,
    job_id: int = JOB_ID,
) -> Job:
    """Return a job: a label movie, its raw frames, montages of its positions (with holes and
    specks), and the logs of the pre-annotation step that made them."""
    nx, ny = segments
    rng = np.random.default_rng(seed)
    truth = label_movie(frames, height, width, cells, seed=seed)
    step_y, step_x = height // ny, width // nx
    grid = Grid(
        height, width, ny, nx, int(step_y * overlap_perc / 100), int(step_x * overlap_perc / 100)
    )
    layout = Layout(montage_len, row_length, buffer, buffer)
    inputs = {}
    for t in range(frames):
        raw = raw_frame(truth[t], rng)
        buf = io.BytesIO()
        Image.fromarray(raw).save(buf, format="TIFF")
        inputs[f"raw/raw_frame_{t}.tif"] = buf.getvalue()  # unpadded: natural order matters
    inputs[f"json_logs/{identifier}_montage_maker_log.json"] = json.dumps(
        {
            "montage_len": montage_len,
            "num_x_segments": nx,
            "num_y_segments": ny,
            "row_length": row_length,
            "x_buffer": buffer,
            "y_buffer": buffer,
            "montages_in_pos": frames // montage_len,
        }
    ).encode()
    inputs[f"json_logs/{identifier}_overlapping_chopper_log.json"] = json.dumps(
        {
            "date": "2019-06-01 12:00:00",
            "num_x_segments": nx,
            "num_y_segments": ny,
            "overlap_perc": overlap_perc,
            "identifier": identifier,
            "y_start_indices": [j * step_y for j in range(ny)],
            "x_start_indices": [i * step_x for i in range(nx)],
            "overlapping_x_pix": grid.overlap_x,
            "overlapping_y_pix": grid.overlap_y,
            "original_y": height,
            "original_x": width,
            "frame_offset": 0,
            "num_images": frames,
        }
    ).encode()
    annotations, montages, clean, dirty = {}, [], {}, {}
    for part in range(frames // montage_len):
        for x, y in grid.positions():
            movie = truth[part * montage_len : (part + 1) * montage_len]
            pieces = np.stack([grid.crop(f, x, y) for f in movie])
            clean[(x, y, part)] = pieces
            dirty[(x, y, part)] = add_artefacts(
                pieces, seed=seed + 7 * part + 3 * x + y, holes=6, specks=6
            )
            montage = make_montage(annotation_rgb(dirty[(x, y, part)]), layout)
            annotations[annotation_name(identifier, x, y, part)] = encode_png(montage)
            montages.append((x, y, part))
    if special:
        annotations["superseded.png"] = encode_png(np.zeros_like(montage))
    return Job(
        identifier, job_id, inputs, annotations, montages, truth, clean, dirty, special, grid
    )


class _Figure8Handler(Handler):
    def route(self, path: str, query: str, head: bool) -> None:
        standin: Figure8Standin = self.server.standin
        fault = standin.faults.take(path.lstrip("/"))
        if self.pre_fault(fault, head):
            return
        q = parse_qs(query, keep_blank_values=True)
        if path == f"/v1/jobs/{standin.job.job_id}.csv" or path.startswith("/v1/jobs/"):
            if "key" in q:  # the deprecated query key: the product must never send it
                return self.simple(400, b'{"error":"key in the URL is refused here"}', head)
            if self.headers.get("Authorization") != f"Token token={standin.key}":
                return self.simple(401, b'{"error":"Unauthorized"}', head)
            if path != f"/v1/jobs/{standin.job.job_id}.csv":
                return self.simple(404, b'{"error":"job not found"}', head)
            if q.get("type", ["full"])[0] not in REPORT_TYPES:
                return self.simple(400, b'{"error":"unknown report type"}', head)
            if standin.queued > 0:
                standin.queued -= 1
                return self.simple(202, b'{"status":"queued"}', head, [("Retry-After", "0")])
            return self.serve(standin.report(), "application/zip", head, fault)
        if path.startswith("/annotations/"):
            data = standin.job.annotations.get(path[len("/annotations/") :])
            if data is None:
                return self.simple(404, b"not found", head)
            if fault and fault[0] == "corrupt":
                data = corrupted(data)
            return self.serve(data, "image/png", head, fault)
        return self.simple(404, b"not found", head)


class Figure8Standin(Standin):
    """Local Figure Eight API for one job: the zipped report and the annotation images."""

    handler = _Figure8Handler
    name = "figure8-standin"

    def __init__(self, job: Job | None = None, *, key: str = "standin-key", queued: int = 1, **kw):
        super().__init__(**kw)
        self.job = job or generate_job()
        self.key = key
        self.queued = queued  # reports answered 202 (queued) before the zip
        self.report_bytes: bytes | None = None  # set to serve another report (tests)

    def report(self) -> bytes:
        """Return the job's report zip (annotation URLs point at this server)."""
        if self.report_bytes is not None:
            return self.report_bytes
        return report_zip(self.job.report_rows(self.url), member=f"f{self.job.job_id}.csv")


def main(argv=None) -> int:
    """Run the stand-in, or write its job's input folder."""
    ap = argparse.ArgumentParser(prog="python -m standins.figure8", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the generated job's API")
    serve.add_argument("--root", help="unused (the job is generated in memory)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8768)
    serve.add_argument("--key", default="standin-key")
    inputs = sub.add_parser("input", help="write the job's raw frames and logs")
    inputs.add_argument("--root", required=True)
    args = ap.parse_args(argv)
    if args.command == "input":
        generate_job().write_inputs(Path(args.root))
        return 0
    server = Figure8Standin(generate_job(), key=args.key, host=args.host, port=args.port)
    serve_until_signalled(server, f"Figure Eight stand-in serving {server.url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
