"""Label cleaning (figure8's clean-annotations) against a straightforward reference.

200 montages of 8 frames at 512x512 with ~150 cells per frame, holes and specks (generated
by standins/figure8.py), chopped into frames. In the same run:
- reference: per frame, scikit-image's `remove_small_holes` and `remove_small_objects` on
  the foreground, then a loop per filled hole for the majority relabel (over the hole's
  bounding box); per montage, a loop per label for the sequential relabel of its frames
  together (the stage renumbers a movie's frames together, so a cell keeps its label);
- ours: what clean-annotations@figure8 runs, `clean_movie_labels` per montage, through the
  shared executor (`pmap`, processes).
Outputs must be equal frame by frame. The last line is reference time / our time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import median
from scipy import ndimage as ndi
from skimage import morphology

from stages.core.parallel import pmap
from stages.sources.figure8.labels import clean_movie_labels, label_dtype
from stages.sources.figure8.montage import Geometry, chop
from standins.figure8 import add_artefacts, label_movie, make_montage

HOLE_MAX, OBJECT_MAX, CONNECTIVITY = 64, 10, 1
GEOMETRY = Geometry(montage_len=8, row_length=4, x_buffer=10, y_buffer=10)


def reference_frame(labels: np.ndarray) -> np.ndarray:
    """Clean one frame the straightforward way: scikit-image calls and a Python loop."""
    fg = labels > 0
    filled = morphology.remove_small_holes(fg, max_size=HOLE_MAX, connectivity=CONNECTIVITY)
    kept = morphology.remove_small_objects(filled, max_size=OBJECT_MAX, connectivity=CONNECTIVITY)
    out = np.where(kept & fg, labels, 0).astype(np.int64)
    before = out.copy()  # every hole votes on the labels as they were before any filling
    holes, n = ndi.label(kept & ~fg, ndi.generate_binary_structure(2, CONNECTIVITY))
    for i, box in enumerate(ndi.find_objects(holes), 1):
        ys, xs = box
        box = (slice(max(ys.start - 1, 0), ys.stop + 1), slice(max(xs.start - 1, 0), xs.stop + 1))
        hole = holes[box] == i
        ring = ndi.binary_dilation(hole, np.ones((3, 3), bool)) & ~hole
        votes = before[box][ring]
        votes = votes[votes > 0]
        if votes.size:
            out[box][hole] = np.bincount(votes).argmax()  # ties: the smaller label
    return out


def reference(movie: list[np.ndarray]) -> np.ndarray:
    """Clean a montage's frames one by one, then relabel them together, label by label."""
    out = np.stack([reference_frame(f) for f in movie])
    result = np.zeros_like(out)
    values = np.unique(out)
    for new, old in enumerate(values[values > 0], 1):
        result[out == old] = new
    return result.astype(label_dtype(int(result.max())))


def ours(movie: list[np.ndarray]) -> np.ndarray:
    """Clean a montage's frames with the product's function."""
    return clean_movie_labels(movie, HOLE_MAX, OBJECT_MAX, CONNECTIVITY)[0]


def make_movies(n_montages: int) -> list[list[np.ndarray]]:
    """Generate montages from synthetic movies and chop them into frames (not timed)."""
    movies = []
    for m in range(n_montages):
        movie = add_artefacts(label_movie(8, 512, 512, 150, seed=m), seed=10_000 + m)
        movies.append(list(chop(make_montage(movie, GEOMETRY), GEOMETRY)))
    return movies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--montages", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    movies = make_movies(args.montages)
    frames = [f for movie in movies for f in movie]  # for the rates
    print(f"{len(frames)} frames of 512x512 from {args.montages} montages")
    times: dict[str, list[float]] = {"reference": [], "ours": []}
    for r in range(args.rounds):
        for name in ("reference", "ours") if r % 2 == 0 else ("ours", "reference"):
            start = time.perf_counter()
            if name == "reference":
                got = [reference(m) for m in movies]
            else:
                got = list(pmap(ours, movies, kind="process", window=16))
            times[name].append(time.perf_counter() - start)
            print(f"round {r} {name:9s} {times[name][-1]:6.2f} s", flush=True)
            if name == "reference":
                want = got
            else:
                mine = got
        for a, b in zip(want, mine, strict=True):
            if a.dtype != b.dtype or not np.array_equal(a, b):
                raise SystemExit("outputs differ between ours and the reference")
    # For the record: ours on one core (the gain without the executor's processes).
    start = time.perf_counter()
    for m in movies:
        ours(m)
    single = time.perf_counter() - start
    print(f"ours, one process {single:6.2f} s ({len(frames) / single:6.1f} frames/s)")
    ref, our = median(times["reference"]), median(times["ours"])
    print(f"reference {ref:6.2f} s ({len(frames) / ref:6.1f} frames/s)")
    print(f"ours      {our:6.2f} s ({len(frames) / our:6.1f} frames/s)")
    print(f"clean_speedup={ref / our:.3f}")


if __name__ == "__main__":
    main()
