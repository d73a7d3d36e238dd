"""extract-frames@figure8: annotation montages cut into label movies beside their raw frames.

A movie is `{identifier}_x_XX_y_YY_part_P` (`chop_raw`: one position of one part, raw frames
cut to that position) or `{identifier}_part_P` (`recombine`: every position stitched back
into full frames). Each of its frames is two items, `<movie>_frame_TT/annotated` (a label
image: the annotation's red channel, or `frames.colours` mapped) and `<movie>_frame_TT/raw`.
A movie that cannot be made (its montage not fetched or undecodable, raw frames missing, a
size that does not match the logs) is one `corrupt` row with the reason; the rest go on.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from stages.core.errors import MetadataError, StoreError
from stages.core.files import spool, unspool
from stages.core.metrics import class_counts
from stages.core.store import Row, ShardWriter, Store, member_name, write_manifest
from stages.families import Extractor, Inputs
from stages.formats.images import decode_array, encode_array, refuse_lossy
from stages.sources.figure8.conf import Figure8Conf, FramesMode, rgb
from stages.sources.figure8.fetch import LOGS
from stages.sources.figure8.labels import label_dtype, to_labels
from stages.sources.figure8.montage import (
    Chopper,
    Geometry,
    chop,
    read_chopper_log,
    read_montage_log,
    stitch,
)


@dataclass(frozen=True)
class Ref:
    """Where one payload lies (picklable, for worker processes)."""

    path: str
    offset: int
    size: int

    def read(self) -> bytes:
        """Return the payload's bytes."""
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read(self.size)
        if len(data) != self.size:
            raise StoreError(f"{self.path} is truncated: run the fetch stage again")
        return data


@dataclass(frozen=True)
class Movie:
    """One movie to make: its montages by position, its raw frames, the geometry."""

    movie: str
    part: int
    position: tuple[int, int] | None  # None: every position, stitched (recombine)
    montages: dict[tuple[int, int], Ref]
    raws: list[Ref]
    geometry: Geometry
    chopper: Chopper
    colours: dict[tuple[int, int, int], int] | None


@dataclass(frozen=True)
class Made:
    """A movie's frames as (label image, ext, raw image, ext, (h, w)), and the pixels no
    colour mapped."""

    frames: list[tuple[bytes, str, bytes, str, tuple[int, int]]]
    unmapped: int


@dataclass(frozen=True)
class Spooled:
    """What a movie task returns to the driver (small): its frames' metadata, the spool file
    holding their images (label then raw, frame by frame) and their sizes."""

    meta: list[tuple[str, str, tuple[int, int]]]  # (label ext, raw ext, (h, w)) per frame
    unmapped: int
    spool: str
    sizes: list[int]

    def frames(self) -> list[tuple[bytes, str, bytes, str, tuple[int, int]]]:
        """Return the frames as make() gave them (and delete the spool)."""
        blobs = unspool(self.spool, self.sizes)
        return [
            (blobs[2 * i], lab_ext, blobs[2 * i + 1], raw_ext, hw)
            for i, (lab_ext, raw_ext, hw) in enumerate(self.meta)
        ]


def make_spooled(job: tuple[Movie, str]) -> Spooled | str:
    """Make one movie (a task) into a spool file in the output dir; return the metadata."""
    movie, path = job
    made = make(movie)
    if isinstance(made, str):
        return made
    blobs = [b for lab, _, raw, _, _ in made.frames for b in (lab, raw)]
    meta = [(lab_ext, raw_ext, hw) for _, lab_ext, _, raw_ext, hw in made.frames]
    return Spooled(meta, made.unmapped, path, spool(path, blobs))


def process_died(job) -> str:
    """Return the reason of a task that kept killing its process."""
    return "worker process died"


def ref(store: Store, row: Row) -> Ref:
    """Return where a row's payload lies."""
    return Ref(str(store.shard_path(row)), row.offset, row.bytes)


def label_frames(movie: Movie, xy: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Return one position's montage cut into label frames (T, h, w), and unmapped pixels."""
    image = annotation_pixels(movie.montages[xy].read())
    labels, unmapped = to_labels(image, movie.colours)
    frames = chop(labels, movie.geometry)
    if frames.shape[1:3] != movie.chopper.piece_shape:
        raise MetadataError(
            f"montage tiles are {frames.shape[2]}x{frames.shape[1]}, the chopper log's "
            f"positions {movie.chopper.piece_shape[1]}x{movie.chopper.piece_shape[0]}"
        )
    return frames, unmapped


def annotation_pixels(data: bytes) -> np.ndarray:
    """Return an annotation's pixels; transparent ones are background (whatever their colour)."""
    try:
        refuse_lossy(data)
    except ValueError as exc:
        raise MetadataError(f"annotation montage: {exc}") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            if "A" in im.getbands() or "transparency" in im.info:
                rgba = np.asarray(im.convert("RGBA"))
                image = rgba[..., :3].copy()
                image[rgba[..., 3] == 0] = 0
                return image
        return decode_array(data)
    except Exception as exc:  # Pillow raises many types for hostile data (bombs included)
        raise MetadataError(f"undecodable annotation montage: {type(exc).__name__}") from None


def raw_frame(data: bytes) -> np.ndarray:
    """Return a raw frame's pixels (one channel, or RGB)."""
    try:
        arr = decode_array(data)
    except ValueError as exc:
        raise MetadataError(f"raw frame: {exc}") from None
    except Exception as exc:  # Pillow raises many types for bad data
        raise MetadataError(f"undecodable raw frame: {type(exc).__name__}") from None
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    return arr


def make(movie: Movie) -> Made | str:
    """Make one movie's frames (in a worker process); return them or why it failed."""
    try:
        T = movie.geometry.montage_len
        if len(movie.raws) < T:
            return f"raw frames of part {movie.part} missing from the input"
        unmapped = 0
        if movie.position is not None:
            labels, unmapped = label_frames(movie, movie.position)
        else:
            pieces = {}
            for xy in movie.chopper.positions():
                pieces[xy], n = label_frames(movie, xy)
                unmapped += n
            labels = stitch(pieces, movie.chopper)
        labels = labels.astype(label_dtype(int(labels.max(initial=0))))
        out, channels = [], set()
        for t in range(T):
            raw = raw_frame(movie.raws[t].read())
            channels.add(raw.shape[2:])
            if len(channels) > 1:
                raise MetadataError("raw frames differ in channels within a part")
            if movie.position is not None:
                raw = movie.chopper.piece(raw, *movie.position)
            else:  # the whole frame, as far as the positions cover it
                chopper = movie.chopper
                if raw.shape[:2] != (chopper.original_y, chopper.original_x):
                    raise MetadataError(
                        f"a raw frame is {raw.shape[1]}x{raw.shape[0]}, the chopper log says "
                        f"{chopper.original_x}x{chopper.original_y}"
                    )
                raw = raw[: labels.shape[1], : labels.shape[2]]
            label_bytes, label_ext = encode_array(labels[t])
            raw_bytes, raw_ext = encode_array(raw)
            out.append((label_bytes, label_ext, raw_bytes, raw_ext, labels.shape[1:3]))
        return Made(out, unmapped)
    except MetadataError as exc:
        return str(exc)
    except ValueError as exc:  # e.g. a raw frame's pixels no lossless image format holds
        return f"unstorable frame: {exc}"


def plan_movies(cfg: Figure8Conf, store: Store) -> tuple[list[Movie], list[tuple[Row, str]]]:
    """Return the movies to make, and the ones that cannot be (a row and a reason)."""
    geometry = read_montage_log(store.root / LOGS / "montage_maker.json")
    chopper = read_chopper_log(store.root / LOGS / "overlapping_chopper.json")
    colours = {rgb(k): v for k, v in cfg.frames.colours.items()} or None
    rows = store.rows()
    raws = sorted(
        (r for r in rows if r.meta.get("role") == "raw" and r.status == "ok"),
        key=lambda r: r.meta["frame"],
    )
    T = geometry.montage_len
    montages = [r for r in rows if r.meta.get("role") == "montage"]
    by_part: dict[int, dict[tuple[int, int], Row]] = {}
    for r in montages:
        by_part.setdefault(r.meta["part"], {})[(r.meta["x"], r.meta["y"])] = r
    ident = cfg.fetch.identifier
    positions = chopper.positions()
    movies, failed = [], []
    for part, found in sorted(by_part.items()):
        if cfg.frames.mode is FramesMode.recombine:
            wanted = [(f"{ident}_part_{part}", None, {xy: found.get(xy) for xy in positions})]
        else:
            wanted = [
                (f"{ident}_x_{x:02d}_y_{y:02d}_part_{part}", (x, y), {(x, y): r})
                for (x, y), r in sorted(found.items())
            ]
        raw_refs = [ref(store, r) for r in raws[part * T : (part + 1) * T]]
        for name, position, needed in wanted:
            reason = unusable(needed, positions)
            if reason is not None:
                failed.append((_movie_row(name, part, position, ident), reason))
                continue
            refs = {xy: ref(store, r) for xy, r in needed.items()}
            movies.append(Movie(name, part, position, refs, raw_refs, geometry, chopper, colours))
    return movies, failed


def unusable(needed: dict[tuple[int, int], Row | None], positions) -> str | None:
    """Return why a movie's montages cannot make it (None: they can)."""
    for (x, y), row in sorted(needed.items()):
        # One montage: the movie's id names it; several (recombine): say which.
        what = "montage" if len(needed) == 1 else f"montage x_{x:02d}_y_{y:02d}"
        if (x, y) not in positions:
            return f"{what} lies outside the chopper log's positions"
        if row is None:
            return f"{what} is not in the report"
        if row.status != "ok":
            return f"{what} not fetched ({row.status}: {row.reason})"
    return None


def _movie_row(name: str, part: int, position: tuple[int, int] | None, ident: str) -> Row:
    """Return the row standing for a movie that could not be made."""
    meta = {"movie": name, "clip": name, "part": part}
    if position is not None:
        meta.update(x=position[0], y=position[1])
    return Row(item_id=name, source="figure8", source_id=ident, status="corrupt", meta=meta)


class Figure8Extractor(Extractor):
    """Annotation montages cut into label movies beside their raw frames, a task per movie."""

    def run(self, inputs: Inputs) -> dict:
        """Write the label movies and their raw frames as a store; return the metrics.

        Each movie is a task of the executor that spools its images into the output dir;
        this process packs them in order."""
        cfg: Figure8Conf = inputs.cfg
        out_dir, ex = inputs.out_dir, inputs.executor
        movies, failed = plan_movies(cfg, inputs.store)
        out_dir.mkdir(parents=True, exist_ok=True)
        ex.check_visible(out_dir)
        writer = ShardWriter(out_dir, inputs.shard_bytes)
        rows: list[Row] = []
        reasons: Counter = Counter()
        for row, reason in failed:
            row.reason = reason
            reasons[reason] += 1
            rows.append(row)
        totals: Counter = Counter()
        ok: list[str] = []

        def pack(i: int, res: Spooled | str, _: Path) -> None:
            movie = movies[i]
            if isinstance(res, str):
                reasons[res] += 1
                bad = _movie_row(movie.movie, movie.part, movie.position, cfg.fetch.identifier)
                bad.reason = res
                rows.append(bad)
                return
            totals["unmapped"] += res.unmapped
            ok.append(movie.movie)
            rows.extend(movie_rows(cfg, movie, res, writer, totals))

        ex.pack_spooled(
            make_spooled,
            movies,
            out_dir,
            writer,
            pack,
            desc="frames@figure8",
            unit="movie",
            lost=process_died,
        )
        write_manifest(out_dir, rows, list(cfg.classes))
        labelled = [r for r in rows if r.meta.get("role") == "annotated" and r.meta["frame"] == 0]
        return {
            "mode": cfg.frames.mode.value,
            "clips": len(movies) + len(failed),
            "clips_ok": len(ok),
            "clips_failed": sum(reasons.values()),
            "reasons": dict(sorted(reasons.items())),
            "frames": totals["frames"],
            "bytes": totals["bytes"],
            "unmapped_pixels": totals["unmapped"],
            "classes": class_counts(labelled, list(cfg.classes)),
        }


def movie_rows(
    cfg: Figure8Conf, movie: Movie, res: Spooled, writer: ShardWriter, totals: Counter
) -> list[Row]:
    """Pack one movie's spooled frames (label image, then raw) in order; return their rows."""
    meta = {"movie": movie.movie, "clip": movie.movie, "part": movie.part}
    if movie.position is not None:
        meta.update(x=movie.position[0], y=movie.position[1])
    T, out = movie.geometry.montage_len, []
    for t, (lab, lab_ext, raw, raw_ext, (h, w)) in enumerate(res.frames()):
        frame_id = f"{movie.movie}_frame_{t:02d}"
        frame_meta = {**meta, "frame": t, "raw_frame": movie.part * T + t}
        for role, data, ext in (("annotated", lab, lab_ext), ("raw", raw, raw_ext)):
            item_id = f"{frame_id}/{role}"
            shard, offset = writer.add(member_name(item_id, ext), io.BytesIO(data), len(data))
            out.append(
                Row(
                    item_id=item_id,
                    source="figure8",
                    source_id=movie.movie,
                    width=w,
                    height=h,
                    bytes=len(data),
                    labels=list(cfg.classes) if role == "annotated" else [],
                    shard=shard,
                    offset=offset,
                    meta={**frame_meta, "role": role, "ext": ext},
                )
            )
            totals["bytes"] += len(data)
        totals["frames"] += 1
    return out
