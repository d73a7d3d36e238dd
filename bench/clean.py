"""Label cleaning (figure8's clean-annotations) against a straightforward reference.

200 montages of 8 frames at 512x512 with ~150 cells per frame, holes and specks (generated
by standins/figure8.py), chopped into frames. In the same run:
- reference: per frame, scikit-image's `remove_small_holes` and `remove_small_objects` on
  the foreground, then a loop per filled hole for the majority relabel (over the hole's
  bounding box) and a loop per label for the sequential relabel;
- ours: `clean_labels` on every frame through the shared executor (`pmap`, processes).
Outputs must be equal frame by frame. The last line is reference time / our time.
"""

from __future__ import annotations

import _unshadow  # noqa: F401  # isort: skip

import argparse
import time

import numpy as np
from _common import median
from scipy import ndimage as ndi
from skimage import morphology

from stages.core.parallel import pmap
from stages.sources.figure8.labels import clean_labels, label_dtype
from stages.sources.figure8.montage import Geometry, chop
from standins.figure8 import add_artefacts, label_movie, make_montage

HOLE_MAX, OBJECT_MAX, CONNECTIVITY = 64, 10, 1
GEOMETRY = Geometry(montage_len=8, row_length=4, x_buffer=10, y_buffer=10)


def reference(labels: np.ndarray) -> np.ndarray:
    """Clean one frame the straightforward way: scikit-image calls and Python loops."""
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
    result = np.zeros_like(out)
    values = np.unique(out)
    for new, old in enumerate(values[values > 0], 1):
        result[out == old] = new
    return result.astype(label_dtype(int(result.max())))


def ours(frame: np.ndarray) -> np.ndarray:
    """Clean one frame with the product's function."""
    return clean_labels(frame, HOLE_MAX, OBJECT_MAX, CONNECTIVITY).labels


def make_frames(n_montages: int) -> list[np.ndarray]:
    """Generate montages from synthetic movies and chop them into frames (not timed)."""
    frames = []
    for m in range(n_montages):
        movie = add_artefacts(label_movie(8, 512, 512, 150, seed=m), seed=10_000 + m)
        frames.extend(chop(make_montage(movie, GEOMETRY), GEOMETRY))
    return frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--montages", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    frames = make_frames(args.montages)
    print(f"{len(frames)} frames of 512x512 from {args.montages} montages")
    times: dict[str, list[float]] = {"reference": [], "ours": []}
    for r in range(args.rounds):
        for name in ("reference", "ours") if r % 2 == 0 else ("ours", "reference"):
            start = time.perf_counter()
            if name == "reference":
                got = [reference(f) for f in frames]
            else:
                got = list(pmap(ours, frames, kind="process", window=64))
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
    for f in frames:
        ours(f)
    single = time.perf_counter() - start
    print(f"ours, one process {single:6.2f} s ({len(frames) / single:6.1f} frames/s)")
    ref, our = median(times["reference"]), median(times["ours"])
    print(f"reference {ref:6.2f} s ({len(frames) / ref:6.1f} frames/s)")
    print(f"ours      {our:6.2f} s ({len(frames) / our:6.1f} frames/s)")
    print(f"clean_speedup={ref / our:.3f}")


if __name__ == "__main__":
    main()
