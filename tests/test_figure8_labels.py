"""Figure Eight / DeepCell image processing: montage geometry and label cleaning."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage import morphology

from stages.core.errors import MetadataError
from stages.sources.figure8.labels import clean_labels, to_labels
from stages.sources.figure8.montage import Chopper, Geometry, chop, read_montage_log
from standins.figure8 import add_artefacts, label_movie, make_montage


@pytest.mark.parametrize(
    "montage_len, row_length, x_buffer, y_buffer",
    [(8, 4, 10, 10), (7, 3, 5, 2), (5, 5, 0, 0), (1, 1, 3, 0), (10, 3, 1, 7)],
)
def test_chopping_a_made_montage_gives_the_movie_back(montage_len, row_length, x_buffer, y_buffer):
    rng = np.random.default_rng(montage_len * 100 + row_length)
    geometry = Geometry(montage_len, row_length, x_buffer, y_buffer)
    for shape in [(13, 17), (32, 24, 3)]:
        movie = rng.integers(0, 65535, size=(montage_len, *shape), dtype=np.uint16)
        montage = make_montage(movie, geometry, fill=7)
        frames = chop(montage, geometry)
        # Exactly montage_len frames: the short last row's padding tiles are not frames.
        assert frames.shape == movie.shape and np.array_equal(frames, movie)


def test_tiles_sit_where_the_montage_maker_put_them():
    # 5 frames of 10 x 7 in rows of 3: 2 rows, with y_buffer 2 and x_buffer 4 on every edge.
    # Montage height 2 * 10 + 3 * 2 = 26, width 3 * 7 + 4 * 4 = 37.
    geometry = Geometry(montage_len=5, row_length=3, x_buffer=4, y_buffer=2)
    assert geometry.tile_size(26, 37) == (10, 7)
    # Frame 0 (row 0, column 0): one buffer above and left, y 2..12, x 4..11.
    assert geometry.tile_box(0, 10, 7) == (2, 12, 4, 11)
    # Frame 4 (row 1, column 1): y0 = 2 + 10 + 2 = 14, x0 = 4 + 7 + 4 = 15.
    assert geometry.tile_box(4, 10, 7) == (14, 24, 15, 22)
    # Frame 2 (row 0, column 2): x0 = 4 + 2 * (7 + 4) = 26, x1 = 33; the last 4 px are buffer.
    assert geometry.tile_box(2, 10, 7) == (2, 12, 26, 33)
    montage = np.zeros((26, 37), np.uint8)
    montage[2:12, 4:11] = 1
    montage[2:12, 26:33] = 3
    montage[14:24, 15:22] = 5
    frames = chop(montage, geometry)
    assert frames.shape == (5, 10, 7)
    assert [int(f.min()) for f in frames] == [int(f.max()) for f in frames] == [1, 0, 3, 0, 5]


def test_positions_are_cut_where_the_chopper_cut_them():
    # A 20 x 30 frame in 2 x 3 steps of 20 // 2 = 10 rows and 30 // 3 = 10 columns, widened by
    # 2 rows and 3 columns on each side: positions of 10 + 2 * 2 = 14 x 10 + 2 * 3 = 16.
    chopper = Chopper(
        original_y=20, original_x=30, num_y_segments=2, num_x_segments=3,
        overlapping_y_pix=2, overlapping_x_pix=3,
    )  # fmt: skip
    frame = np.arange(1, 601).reshape(20, 30)  # pixel (r, c) holds 30 * r + c + 1
    assert chopper.piece_shape == (14, 16)
    # Position (x 1, y 1) starts at row 10 - 2 = 8, column 10 - 3 = 7: 30 * 8 + 7 + 1 = 248.
    middle = chopper.piece(frame, 1, 1)
    assert middle.shape == (14, 16) and middle[0, 0] == 248
    # Its row 11, column 15 is frame row 19, column 22: 30 * 19 + 22 + 1 = 593; its rows 12 and
    # 13 are frame rows 20 and 21, beyond the frame, so zeros.
    assert middle[11, 15] == 593 and not middle[12:].any()
    # Position (0, 0) starts at row -2, column -3: 2 zero rows and 3 zero columns, then (0, 0).
    corner = chopper.piece(frame, 0, 0)
    assert not corner[:2].any() and not corner[:, :3].any() and corner[2, 3] == 1


def test_the_montage_log_is_read_and_checked(tmp_path):
    log = {
        "montage_len": 7,
        "num_x_segments": 2,
        "num_y_segments": 3,
        "row_length": 3,
        "x_buffer": 5,
        "y_buffer": 4,
        "montages_in_pos": 2,
    }
    path = tmp_path / "id_montage_maker_log.json"
    path.write_text(json.dumps(log))
    geometry = read_montage_log(path)
    assert (geometry.rows, geometry.montage_len, geometry.montages_in_pos) == (3, 7, 2)
    for bad, message in [
        ({k: v for k, v in log.items() if k != "row_length"}, "lacks"),
        ({**log, "row_length": True}, "integers"),
        ({**log, "row_length": 0}, "row_length must be >= 1"),
        ([1, 2], "not a JSON object"),
    ]:
        path.write_text(json.dumps(bad))
        with pytest.raises(MetadataError, match=message):
            read_montage_log(path)
    with pytest.raises(MetadataError, match="cannot hold"):
        chop(np.zeros((20, 20)), Geometry(4, 4, 5, 5))


def ring(size: int) -> np.ndarray:
    """A 9x9+ image of one cell (label 5) with a square hole of `size` pixels in its middle."""
    side = int(np.ceil(np.sqrt(size)))
    img = np.zeros((side + 8, side + 8), np.uint8)
    img[2:-2, 2:-2] = 5
    hole = np.zeros_like(img, bool)
    hole[4 : 4 + side, 4 : 4 + side] = True
    idx = np.argwhere(hole)[:size]
    img[idx[:, 0], idx[:, 1]] = 0
    return img


@pytest.mark.parametrize("hole_max", [4, 9])
def test_holes_up_to_the_threshold_are_filled_and_larger_ones_kept(hole_max):
    # scikit-image 0.26's max_size: "smaller than or equal to" is filled.
    at = clean_labels(ring(hole_max), hole_max=hole_max, object_max=0)
    assert (
        at.holes_filled == 1 and at.hole_pixels == hole_max and (at.labels[2:-2, 2:-2] == 1).all()
    )
    over = clean_labels(ring(hole_max + 1), hole_max=hole_max, object_max=0)
    assert over.holes_filled == 0 and (over.labels == 0).sum() == (ring(hole_max + 1) == 0).sum()


def test_objects_up_to_the_threshold_are_removed_and_larger_ones_kept():
    img = np.zeros((20, 40), np.uint8)
    img[2:5, 2:5] = 9  # 9 pixels
    img[10:12, 10:15] = 3  # 10 pixels
    img[2:4, 20:25] = 4  # 10 pixels, touching the next: one object of 20
    img[4:6, 20:25] = 200
    out = clean_labels(img, hole_max=0, object_max=10)
    assert out.objects_removed == 2 and out.cells == 2
    assert (out.labels[2:4, 20:25] == 1).all() and (out.labels[4:6, 20:25] == 2).all()
    assert (out.labels[2:5, 2:5] == 0).all() and (out.labels[10:12, 10:15] == 0).all()


def test_connectivity_decides_what_touches():
    img = np.zeros((10, 10), np.uint8)
    img[2, 2] = img[3, 3] = img[4, 4] = 7  # three diagonal pixels
    assert clean_labels(img, hole_max=0, object_max=2, connectivity=1).cells == 0
    assert clean_labels(img, hole_max=0, object_max=2, connectivity=2).cells == 1


def test_a_filled_hole_takes_its_rings_majority_label_once_per_pixel():
    img = np.array(
        [
            [3, 3, 3, 8, 8],
            [3, 3, 0, 8, 8],
            [3, 3, 0, 8, 8],
            [3, 3, 3, 8, 8],
        ],
        np.uint8,
    )
    # Ring of the 2-pixel hole: 3 has 7 pixels, 8 has 3 (each pixel counted once).
    out = clean_labels(img, hole_max=4, object_max=0)
    assert out.labels[1, 2] == out.labels[2, 2] == out.labels[0, 0] == 1
    tie = np.array([[3, 3, 8], [3, 0, 8], [3, 8, 8]], np.uint8)  # 3 and 8: 4 ring pixels each
    assert clean_labels(tie, hole_max=1, object_max=0).labels[1, 1] == 1  # the smaller, 3


def test_more_than_255_cells_do_not_wrap():
    img = np.zeros((70, 70), np.uint16)
    values = np.random.default_rng(0).permutation(np.arange(1, 1001))[:300] * 3
    for i, v in enumerate(values):
        y, x = divmod(i, 17)
        img[y * 4 : y * 4 + 3, x * 4 : x * 4 + 3] = v
    out = clean_labels(img, hole_max=0, object_max=0)
    assert out.cells == 300 and out.labels.dtype == np.uint16
    assert sorted(np.unique(out.labels)[1:]) == list(range(1, 301))
    # Renumbered in the order of the original values.
    first = {int(v): int(out.labels[img == v][0]) for v in values}
    assert [first[v] for v in sorted(first)] == list(range(1, 301))


def test_cleaning_matches_scikit_image_on_holes_and_objects():
    movie = add_artefacts(label_movie(3, 128, 128, 40, seed=3), seed=4, holes=30, specks=30)
    for frame in movie:
        out = clean_labels(frame, hole_max=64, object_max=10)
        filled = morphology.remove_small_holes(frame > 0, max_size=64, connectivity=1)
        kept = morphology.remove_small_objects(filled, max_size=10, connectivity=1)
        assert np.array_equal(out.labels > 0, kept)
        assert out.cells == len(np.unique(frame[kept & (frame > 0)]))


def test_annotations_become_labels_by_red_channel_or_colour_map():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = (7, 200, 1)
    rgb[1, 1] = (255, 0, 0)
    rgb[2, 2] = (1, 2, 3)
    labels, unmapped = to_labels(rgb)
    assert labels[0, 0] == 7 and labels[1, 1] == 255 and unmapped == 0
    labels, unmapped = to_labels(rgb, {(255, 0, 0): 300, (1, 2, 3): 2})
    assert (labels[1, 1], labels[2, 2], labels[0, 0]) == (300, 2, 0) and unmapped == 1
    assert labels.dtype == np.uint16
