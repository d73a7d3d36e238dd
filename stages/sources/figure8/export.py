"""export-npz@figure8: DeepCell training data, one npz per part.

Each entry is a movie (or, with `reshape_size`, a square tile of one): `X` (B,T,H,W,C float32,
the raw frames) and `y` (B,T,H,W,1 int32, the cleaned labels), the keys DeepCell's
`make_training_data` saved, plus `ids` (the entry's movie, and tile) and `positions` (B,5
int32: part, x, y, and the tile's top and left pixel in the movie). Tiles are cut at multiples
of `reshape_size`, the last one anchored to the far edge (so tiles overlap there, and never
pad unless the movie is smaller than a tile); each tile's labels are renumbered 1..N across
its frames, so a cell keeps one label through the movie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.core.config import ExportConf
from stages.core.errors import ConfigError, StoreError
from stages.core.store import Row, read_payload
from stages.families import Exporter, Inputs
from stages.formats.images import decode_array
from stages.formats.npz import write_npz
from stages.sources.figure8.clean import movies_of
from stages.sources.figure8.conf import Figure8Conf
from stages.sources.figure8.labels import relabel_movie


def tile_starts(size: int, tile: int) -> list[int]:
    """Return tile origins along one axis: multiples of `tile`, the last flush with the edge."""
    if size <= tile:
        return [0]
    n = math.ceil(size / tile)
    return sorted({*(i * tile for i in range(n - 1)), size - tile})


def movie_arrays(frames: list[Row]) -> tuple[np.ndarray, np.ndarray]:
    """Return a movie's X (T,H,W,C float32) and y (T,H,W,1 int32) from its frame rows
    (shards located)."""
    raws, labels = [], []
    for row in frames:
        arr = decode_array(read_payload(row.shard, row))
        (raws if row.meta["role"] == "raw" else labels).append(arr)
    X = np.stack(raws).astype(np.float32)
    if X.ndim == 3:
        X = X[..., None]
    y = np.stack(labels).astype(np.int32)[..., None]
    if X.shape[:3] != y.shape[:3]:
        raise StoreError(f"{frames[0].meta['movie']}: raw and label frames differ in size")
    return X, y


def tiles(X: np.ndarray, y: np.ndarray, size: int | None):
    """Yield (tile row, tile column, X tile, y tile) of a movie (the whole movie: None)."""
    if size is None:
        yield 0, 0, X, y
        return
    T, H, W = X.shape[:3]
    for y0 in tile_starts(H, size):
        for x0 in tile_starts(W, size):
            xt = np.zeros((T, size, size, X.shape[3]), X.dtype)
            yt = np.zeros((T, size, size, 1), y.dtype)
            h, w = min(size, H - y0), min(size, W - x0)
            xt[:, :h, :w] = X[:, y0 : y0 + h, x0 : x0 + w]
            yt[:, :h, :w] = y[:, y0 : y0 + h, x0 : x0 + w]
            yield y0, x0, xt, relabel_movie(yt)[0].astype(np.int32)


def check_drops(drop: list[str], movies: dict[str, dict]) -> set[str]:
    """Return the movies samples_to_drop names (by id or position); refuse unknown names.

    `movies` maps every movie id the store knows (failed ones too) to its meta."""
    positions: dict[str, set[str]] = {}
    for movie, meta in movies.items():
        if "x" in meta:
            positions.setdefault(f"x_{meta['x']:02d}_y_{meta['y']:02d}", set()).add(movie)
    out, unknown = set(), []
    for name in drop:
        if name in movies:
            out.add(name)
        elif name in positions:
            out |= positions[name]
        else:
            unknown.append(name)
    if unknown:
        raise ConfigError(
            f"sources.figure8.export.samples_to_drop: {unknown} name no movie or position "
            f"(positions: {', '.join(sorted(positions)) or 'none'}; movies: "
            f"{', '.join(sorted(movies)[:5])}{', ...' if len(movies) > 5 else ''})"
        )
    return out


@dataclass(frozen=True)
class PartTask:
    """One part's npz to write (a task): its movies' frames (raw, label, ...; shards
    located), the tiling and the path."""

    part: int
    movies: tuple[tuple[str, tuple[Row, ...]], ...]
    reshape_size: int | None
    compress: bool
    path: str
    threads: int = 1  # unused: a part's movies are read one after another


@dataclass(frozen=True)
class PartDone:
    """What a part task reports (small: never the arrays)."""

    entries: int
    bytes: int
    shape: list[int]


def write_part(task: PartTask) -> PartDone:
    """Write one part's npz of its movies (or their tiles)."""
    X_all, y_all, ids, where = [], [], [], []
    for movie, frames in task.movies:
        X, y = movie_arrays(list(frames))
        meta = frames[0].meta
        for y0, x0, xt, yt in tiles(X, y, task.reshape_size):
            X_all.append(xt)
            y_all.append(yt)
            tile = "" if task.reshape_size is None else f"_tile_{y0:04d}_{x0:04d}"
            ids.append(movie + tile)
            where.append([task.part, meta.get("x", -1), meta.get("y", -1), y0, x0])
    shapes = {a.shape for a in X_all}
    if len(shapes) != 1:
        raise StoreError(f"part {task.part}: movies differ in shape {sorted(shapes)}")
    arrays = {
        "X": np.stack(X_all),
        "y": np.stack(y_all),
        "ids": np.array(ids, dtype=str),
        "positions": np.array(where, dtype=np.int32),
    }
    path = Path(task.path)
    write_npz(path, arrays, task.compress)
    return PartDone(len(ids), path.stat().st_size, list(arrays["X"].shape[1:]))


class Figure8Exporter(Exporter):
    """DeepCell npz files, one per split and part, each part a task."""

    def run(self, inputs: Inputs, export: ExportConf) -> dict:
        """Write one npz per split and part (`<split>/<identifier>_part_<P>.npz`); return the
        metrics, in total and per split."""
        cfg: Figure8Conf = inputs.cfg
        store, out_dir = inputs.store, inputs.out_dir
        known = {r.meta["movie"]: r.meta for r in store.rows() if "movie" in r.meta}
        movies, raws = movies_of(store)
        dropped = check_drops(cfg.export.samples_to_drop, known) & set(movies)
        parts: dict[str, dict[int, list[str]]] = {s: {} for s in inputs.split.names}
        for movie in sorted(movies):
            if movie not in dropped:
                first = movies[movie][0]
                where = parts.setdefault(first.split or "all", {})
                where.setdefault(first.meta["part"], []).append(movie)
        inputs.executor.check_visible(out_dir)
        per = {}
        for split, by_part in parts.items():
            (out_dir / split).mkdir(parents=True, exist_ok=True)
            tasks = [
                PartTask(
                    part,
                    tuple(
                        (movie, tuple(store.located(interleaved(raws[movie], movies[movie]))))
                        for movie in names
                    ),
                    cfg.export.reshape_size,
                    export.compress,
                    str((out_dir / split).absolute() / f"{cfg.fetch.identifier}_part_{part}.npz"),
                )
                for part, names in sorted(by_part.items())
            ]
            done = list(inputs.executor.map_shards(write_part, tasks))
            entries = sum(d.entries for d in done)
            per[split] = {
                "items": entries,
                "movies": sum(len(n) for n in by_part.values()),
                "shards": len(done),
                "bytes": sum(d.bytes for d in done),
                "entry_shape": done[-1].shape if done else None,
                "classes": {cfg.classes[0]: entries},
            }
        shapes = [m["entry_shape"] for m in per.values() if m["entry_shape"]]
        return {
            **{k: sum(m[k] for m in per.values()) for k in ("items", "movies", "shards", "bytes")},
            "movies_dropped": len(dropped),
            "entry_shape": shapes[0] if shapes else None,
            "classes": {cfg.classes[0]: sum(m["items"] for m in per.values())},
            "splits": per,
        }


def interleaved(raws: list[Row], labels: list[Row]) -> list[Row]:
    """Return a movie's frames as raw, label, raw, label, ... in frame order."""
    return [r for pair in zip(raws, labels, strict=True) for r in pair]
