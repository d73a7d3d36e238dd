"""Crowd annotations to clean label images: colours to labels, holes, specks, relabelling.

The rules (the original's parameters, without its bugs; see ../shared/notes/deepcell-
figure8-camio.md):
- a label image comes from the annotation's red channel, or from a colour -> label map;
- holes are background components of at most `hole_max` pixels (scikit-image 0.26's
  `max_size` semantics: smaller than *or equal to*), found with `connectivity` (1: 4-way,
  2: 8-way), as `remove_small_holes` finds them; they are filled;
- objects are foreground components (touching cells count as one, as the original's binary
  foreground did) of at most `object_max` pixels; they are removed;
- each filled hole takes the label most frequent among the labelled pixels of its true 3x3
  neighbourhood (its ring of 8-neighbours, as labelled before any hole is filled; each ring
  pixel counted once; ties: the smaller label), not the original's off-by-one 2x2 window;
- labels are renumbered 1..N in ascending order of their values, in the narrowest unsigned
  dtype that holds N (the original's uint8 wrapped above 255 cells); a movie's frames are
  renumbered together, so a cell keeps its label from frame to frame (the original relabelled
  whole montages).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

# The 8 neighbours of a pixel: the 3x3 neighbourhood without its centre.
NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


@dataclass(frozen=True)
class Cleaned:
    """A cleaned label image and what cleaning did to it."""

    labels: np.ndarray
    cells: int
    holes_filled: int
    hole_pixels: int
    objects_removed: int


def label_dtype(n: int) -> np.dtype:
    """Return the narrowest unsigned dtype that holds labels 0..n."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def to_labels(image: np.ndarray, colours: dict[tuple[int, int, int], int] | None = None):
    """Return (labels, unmapped pixels): the red channel, or colours mapped (others: 0)."""
    if image.ndim == 2:
        if colours is None:
            return image, 0
        image = np.repeat(image[..., None], 3, axis=2)  # grey v is the colour (v, v, v)
    rgb = image[..., :3].astype(np.uint32)
    if colours is None:
        return image[..., 0], 0
    keys = rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]
    table = sorted((r << 16 | g << 8 | b, label) for (r, g, b), label in colours.items())
    known = np.array([k for k, _ in table], np.uint32)
    values = np.array([v for _, v in table], np.int64)
    at = np.searchsorted(known, keys).clip(0, len(known) - 1)
    hit = known[at] == keys
    labels = np.where(hit, values[at], 0)
    black = keys == 0  # background, mapped or not
    return labels.astype(label_dtype(int(values.max(initial=0)))), int((~hit & ~black).sum())


def clean_labels(
    labels: np.ndarray,
    hole_max: int,
    object_max: int,
    connectivity: int = 1,
    sequential: bool = True,
):
    """Fill small holes, remove small objects, relabel holes by majority, then sequentially
    (unless `sequential` is off: a movie's frames are renumbered together, `relabel_movie`)."""
    structure = ndi.generate_binary_structure(2, connectivity)
    fg = labels > 0
    # Holes: background components of at most hole_max pixels (border ones too, as skimage).
    bg = _label(~fg, structure)
    small_bg = np.bincount(bg.ravel()) <= hole_max
    small_bg[0] = False
    hole = small_bg[bg]
    # Objects: components of the filled foreground; small ones go, with their holes.
    comps = _label(fg | hole, structure)
    sizes = np.bincount(comps.ravel())
    keep = sizes > object_max
    keep[0] = False
    objects_removed = int((~keep[1:]).sum())
    kept = keep[comps]
    out = np.where(kept & fg, labels, 0)
    hole &= kept
    holes = np.unique(bg[hole])
    if holes.size:
        out = out.astype(np.int64)
        out[hole] = _majority(out, bg, hole)
    if sequential:
        out, n = relabel_movie(out[None])
        out = out[0]
    else:
        n = int(np.count_nonzero(np.bincount(out.ravel())[1:]))
    return Cleaned(
        labels=out,
        cells=n,
        holes_filled=int(holes.size),
        hole_pixels=int(hole.sum()),
        objects_removed=objects_removed,
    )


def clean_movie_labels(
    frames: list[np.ndarray], hole_max: int, object_max: int, connectivity: int = 1
) -> tuple[np.ndarray, list[Cleaned]]:
    """Clean a movie's label frames one by one, then renumber them together 1..N; return
    the frames (T, h, w) and what cleaning did to each (`cells`: labels in that frame)."""
    done = [clean_labels(f, hole_max, object_max, connectivity, sequential=False) for f in frames]
    movie, _ = relabel_movie(np.stack([d.labels for d in done]))
    return movie, done


def relabel_movie(frames: np.ndarray) -> tuple[np.ndarray, int]:
    """Return frames (T, h, w) renumbered 1..N in ascending order of their values, together,
    so a cell keeps one label through the movie; and N."""
    # Through a lookup table: labels are small non-negative ints.
    present = np.bincount(frames.ravel()) > 0
    present[0] = False
    lut = np.cumsum(present) * present
    n = int(present.sum())
    return lut[frames].astype(label_dtype(n)), n


def _label(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Return the connected components of a mask (uint16 ids when they fit: faster lookups)."""
    try:
        return ndi.label(mask, structure, output=np.uint16)[0]
    except RuntimeError:  # more than 65535 components
        return ndi.label(mask, structure, output=np.int64)[0]


def _majority(out: np.ndarray, components: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Return, for each hole pixel in order, the majority label of its component's ring."""
    h, w = out.shape
    ys, xs = np.nonzero(hole)
    comp = components[ys, xs].astype(np.int64)
    pixels, comps = [], []
    for dy, dx in NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        ny, nx, c = ny[inside], nx[inside], comp[inside]
        ring = out[ny, nx] > 0
        pixels.append(ny[ring].astype(np.int64) * w + nx[ring])
        comps.append(c[ring])
    # Each (hole, ring pixel) once, as one int64 key; then votes per (hole, label).
    key = np.unique(np.concatenate(comps) * (h * w) + np.concatenate(pixels))
    hole_of, pixel = np.divmod(key, h * w)
    span = int(out.max()) + 1
    votes, counts = np.unique(hole_of * span + out.ravel()[pixel], return_counts=True)
    hole_of, label = np.divmod(votes, span)
    # Per hole: highest count, then smallest label (lexsort's last key sorts first).
    order = np.lexsort((label, -counts, hole_of))
    hole_of, label = hole_of[order], label[order]
    first = np.ones(len(order), bool)
    first[1:] = hole_of[1:] != hole_of[:-1]
    lut = np.zeros(int(components.max()) + 1, np.int64)
    lut[hole_of[first]] = label[first]
    return lut[comp]
