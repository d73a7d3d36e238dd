"""The Figure Eight source on its stand-in: report and annotations, movies, cleaning, npz."""

from __future__ import annotations

import dataclasses
import io
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.core.errors import ConfigError, MetadataError, StageError
from stages.core.executor import LocalExecutor
from stages.core.splits import split_of
from stages.core.store import Store
from stages.fetch import fetch
from stages.formats.images import decode_array, encode_array
from stages.net.download import CredentialRejected
from stages.pipeline.compose import group_defaults, source_defaults
from stages.sources import load
from stages.sources.figure8.clean import clean_movie
from stages.sources.figure8.conf import Figure8SplitBy
from stages.sources.figure8.export import tile_starts
from stages.sources.figure8.labels import clean_labels
from stages.sources.figure8.montage import Chopper, natural_key, stitch
from stages.sources.figure8.movies import Ref
from standins.figure8 import Figure8Standin, generate_job, report_zip
from tests.families import clean_store, export_splits, extract_frames

SOURCE = load("figure8")
KEY = "f8-key-5ecret"
EXPORT = group_defaults("export")
ONE_SPLIT = group_defaults("split", names=["train"], fractions=[1.0])


def conf(url: str, root: Path, **sections):
    """Return the figure8 settings pointed at a stand-in and an input folder."""
    return source_defaults(
        "figure8", fetch={"api": f"{url}/v1", "root": str(root), **sections.pop("fetch", {})},
        **sections,
    )  # fmt: skip


def run_fetch(cfg, out: Path, cache: Path):
    """Run fetch@figure8; return its rows and metrics."""
    fetch_cfg = group_defaults("fetch", backoff=0.01, retries=2)
    return fetch(
        SOURCE, cfg, fetch_cfg, group_defaults("store"), out, cache, executor=LocalExecutor(2)
    )


@pytest.fixture(scope="module")
def job():
    return generate_job()


@pytest.fixture(scope="module")
def built(tmp_path_factory, job):
    """Fetch, extract (chop_raw), clean and export the default job once."""
    tmp = tmp_path_factory.mktemp("figure8")
    job.write_inputs(tmp / "input")
    mp = pytest.MonkeyPatch()
    mp.setenv("FIGURE_EIGHT_KEY", KEY)
    with Figure8Standin(job, key=KEY, queued=1) as srv:
        cfg = conf(srv.url, tmp / "input")
        _, fetched = run_fetch(cfg, tmp / "fetch", tmp / "cache")
        seen = list(srv.seen)
    _, frames = extract_frames(Store(tmp / "fetch"), SOURCE, cfg, tmp / "frames", 1 << 20)
    cleaned = clean_store(Store(tmp / "frames"), SOURCE, cfg, tmp / "clean", split=ONE_SPLIT)
    cleaned = cleaned.metrics
    exported = export_splits(Store(tmp / "clean"), SOURCE, cfg, EXPORT, tmp / "npz", ["train"])
    yield dataclasses.make_dataclass("Built", ["tmp", "cfg", "metrics", "seen", "url"])(
        tmp, cfg, {"fetch": fetched, "frames": frames, "clean": cleaned, "export": exported},
        seen, srv.url,
    )  # fmt: skip
    mp.undo()


def test_the_report_is_fetched_with_the_key_in_a_header_and_broken_links_written(built, job):
    sel = built.metrics["fetch"]["selection"]
    assert sel["broken_links"] == 1 and sel["broken_links_cleared"] == 1
    assert sel["judgments_superseded"] == 1 and sel["rows_of_other_identifiers"] == 1
    assert sel["montages"] == len(job.montages) and sel["raw_frames"] == 8
    reports = [s for s in built.seen if s.path.startswith("/v1/jobs/")]
    assert len(reports) == 2  # 202 (queued), then the zip
    assert all(s.headers.get("Authorization") == f"Token token={KEY}" for s in reports)
    assert all(KEY not in s.query and "key=" not in s.query for s in built.seen)
    out = built.tmp / "fetch"
    broken = (out / "job_1363594_full_report_broken_links.csv").read_text().splitlines()
    assert len(broken) == 2 and "_x_9_y_9_montage_0.png" in broken[1] and "TRUE" in broken[1]
    assert broken[0].split(",") == list(report_columns(out))
    reupload = (out / "job_1363594_reupload.csv").read_text().splitlines()
    assert reupload == ["identifier,image_url", f"{job.identifier},{broken_url(job)}"]


def report_columns(out: Path) -> list[str]:
    """Return the header of the report CSV the fetch stage kept."""
    return (out / "job_1363594_full_report.csv").read_text().splitlines()[0].split(",")


def broken_url(job) -> str:
    from standins.figure8 import UPLOADS

    return f"{UPLOADS}/{job.identifier}_x_9_y_9_montage_0.png"


def test_the_last_judgment_wins_and_a_404_is_one_missing_montage(built, job):
    rows = {r.item_id: r for r in Store(built.tmp / "fetch").rows()}
    second = "3D_example_x_0_y_1_montage_0_annotation"  # judged twice: the later one stands
    assert rows[second].url.endswith("/annotations/3D_example_x_0_y_1_montage_0_annotation.png")
    gone = [r for r in rows.values() if r.status != "ok"]
    assert [(r.status, r.reason) for r in gone] == [("missing", "http 404")]
    assert built.metrics["frames"]["reasons"] == {"montage not fetched (missing: http 404)": 1}


def test_movies_are_the_montages_cut_and_the_raw_frames_cut_alike(built, job):
    store = Store(built.tmp / "frames")
    raws = [decode_array(job.inputs[f"raw/raw_frame_{t}.tif"]) for t in range(8)]
    ok = 0
    for (x, y, part), dirty in job.dirty.items():
        movie = f"3D_example_x_{x:02d}_y_{y:02d}_part_{part}"
        if (x, y, part) == job.montages[-1]:
            assert store.row(movie).status == "corrupt"
            continue
        for t in range(4):  # montage_len 4 in rows of 3: the two padding tiles are no frames
            labels = decode_array(store.read(f"{movie}_frame_{t:02d}/annotated"))
            raw = decode_array(store.read(f"{movie}_frame_{t:02d}/raw"))
            assert np.array_equal(labels, dirty[t])
            # The stand-in's own cut of the same raw frame, not the product's.
            assert np.array_equal(raw, job.grid.crop(raws[part * 4 + t], x, y))
        assert f"{movie}_frame_04/annotated" not in {r.item_id for r in store.rows()}
        ok += 1
    assert ok == built.metrics["frames"]["clips_ok"] == 7


def chopper_of(job) -> Chopper:
    import json

    log = json.loads(job.inputs["json_logs/3D_example_overlapping_chopper_log.json"])
    return Chopper(**{k: log[k] for k in Chopper.__dataclass_fields__})


def same_partition(a: np.ndarray, b: np.ndarray) -> float:
    """Return the share of pixels on which two label images agree up to renumbering."""
    pairs = {}
    agree = 0
    for u, v in zip(a.ravel().tolist(), b.ravel().tolist(), strict=True):
        if (u == 0) != (v == 0):
            continue
        if u == 0 or pairs.setdefault(u, v) == v:
            agree += 1
    return agree / a.size


def test_cleaning_undoes_the_annotators_holes_and_specks(built, job):
    store = Store(built.tmp / "clean")
    m = built.metrics["clean"]
    assert m["frames"] == 28 and m["holes_filled"] > 0 and m["objects_removed"] > 0
    worse = better = 0
    for (x, y, part), truth in job.clean.items():
        movie = f"3D_example_x_{x:02d}_y_{y:02d}_part_{part}"
        if (x, y, part) == job.montages[-1]:
            continue
        for t in range(4):
            row = store.row(f"{movie}_frame_{t:02d}/annotated")
            cleaned = decode_array(store.read(row))
            assert row.meta["cells"] == len(np.unique(cleaned)) - 1
            # Cleaning the true labels too: cells cut to a few pixels at a position's edge are
            # specks, and small gaps between cells and the edge are holes (as skimage's).
            expected = clean_labels(truth[t], 63, 9).labels
            after = same_partition(cleaned, expected)
            before = same_partition(job.dirty[(x, y, part)][t], expected)
            better += after > before
            worse += after < before
    assert better > 20 and worse == 0
    # Raw frames are not copied: the clean manifest points into the frames store's shards.
    raw = store.row("3D_example_x_00_y_00_part_0_frame_00/raw")
    assert raw.shard.startswith("../frames/")


def test_label_frames_above_255_cells_keep_their_labels(tmp_path):
    labels = np.zeros((60, 60), np.uint16)
    for i in range(300):  # 300 separate 2x2 cells
        y, x = divmod(i, 20)
        labels[y * 3 : y * 3 + 2, x * 3 : x * 3 + 2] = 1000 + i
    data, _ = encode_array(labels)
    (tmp_path / "f.png").write_bytes(data)
    cfg = source_defaults("figure8", clean={"object_max": 0}).clean
    [(out, ext, counts)] = clean_movie(([Ref(str(tmp_path / "f.png"), 0, len(data))], cfg))
    back = decode_array(out)
    assert counts["cells"] == 300 and back.max() == 300 and back.dtype == np.uint16


def test_a_cell_keeps_its_label_through_the_movie(built, job):
    """Frames are renumbered together: a cell leaving the view shifts no other cell's label."""
    store = Store(built.tmp / "clean")
    checked = 0
    for (x, y, part), truth in job.clean.items():
        if (x, y, part) == job.montages[-1]:
            continue
        movie = f"3D_example_x_{x:02d}_y_{y:02d}_part_{part}"
        frames = [decode_array(store.read(f"{movie}_frame_{t:02d}/annotated")) for t in range(4)]
        for cell in set(np.unique(truth).tolist()) - {0}:
            seen = set()
            for t in range(4):
                inside = frames[t][truth[t] == cell]
                if inside.size > 30:  # whole enough not to be a speck at the edge
                    seen.add(int(np.bincount(inside).argmax()))
            assert len(seen) <= 1, (movie, cell, seen)
            checked += len(seen)
    assert checked > 50


def test_the_cleaned_movies_labels_run_1_to_n(built):
    store = Store(built.tmp / "clean")
    movie = "3D_example_x_00_y_00_part_0"
    values = set()
    for t in range(4):
        values |= set(
            np.unique(decode_array(store.read(f"{movie}_frame_{t:02d}/annotated"))).tolist()
        )
    assert sorted(values) == list(range(len(values)))


def test_export_writes_deepcell_npz_per_part(built):
    files = sorted((built.tmp / "npz/train").iterdir())
    assert [f.name for f in files] == ["3D_example_part_0.npz", "3D_example_part_1.npz"]
    with np.load(files[0], allow_pickle=False) as npz:
        assert sorted(npz.files) == ["X", "ids", "positions", "y"]
        X, y, ids, pos = npz["X"], npz["y"], npz["ids"], npz["positions"]
    assert X.dtype == np.float32 and y.dtype == np.int32
    assert X.shape == (4, 4, 56, 76, 1) and y.shape == (4, 4, 56, 76, 1)
    assert list(ids) == [f"3D_example_x_{x:02d}_y_{y_:02d}_part_0" for x in (0, 1) for y_ in (0, 1)]
    assert pos.tolist()[1] == [0, 0, 1, 0, 0]
    store = Store(built.tmp / "clean")
    first = decode_array(store.read("3D_example_x_00_y_01_part_0_frame_02/annotated"))
    assert np.array_equal(y[1, 2, ..., 0], first)
    raw = decode_array(store.read("3D_example_x_00_y_01_part_0_frame_02/raw"))
    assert np.array_equal(X[1, 2, ..., 0], raw.astype(np.float32))
    with np.load(files[1], allow_pickle=False) as npz:
        assert len(npz["ids"]) == 3  # the 404'd montage's movie is not there


def position(movie: str) -> str:
    """Return a chopped movie's field of view, e.g. x_00_y_01."""
    return re.search(r"x_\d\d_y_\d\d", movie).group(0)


def test_a_fields_movies_share_its_split_and_export_writes_each_split(built, tmp_path):
    split = group_defaults("split", fractions=[0.5, 0.25, 0.25])
    m = clean_store(
        Store(built.tmp / "frames"), SOURCE, built.cfg, tmp_path / "clean", split=split
    ).metrics
    movies: dict[str, set] = {}
    for row in Store(tmp_path / "clean").rows():
        movies.setdefault(row.meta["movie"], set()).add(row.split)
    assert len(movies) == 8 and all(len(s) == 1 for s in movies.values())
    want = {movie: split_of(split, "figure8", position(movie)) for movie in movies}
    assert {movie: s.pop() for movie, s in movies.items()} == want
    assert len(set(want.values())) == 2  # these fractions spread the 4 positions
    ok = [mv for mv in want if mv != "3D_example_x_01_y_01_part_1"]  # its montage 404'd
    assert m["splits"]["items"] == {s: sum(want[mv] == s for mv in ok) for s in split.names}
    assert sum(m["splits"]["groups"].values()) == 4
    exported = export_splits(
        Store(tmp_path / "clean"), SOURCE, built.cfg, EXPORT, tmp_path / "npz", split.names
    )
    seen = {}
    for path in (tmp_path / "npz").glob("*/*.npz"):
        with np.load(path, allow_pickle=False) as npz:
            seen.update(dict.fromkeys(npz["ids"].tolist(), path.parent.name))
    assert seen == {mv: want[mv] for mv in ok}
    assert exported["items"] == 7 and sum(v["items"] for v in exported["splits"].values()) == 7


def test_tiles_are_anchored_to_the_far_edge_and_relabelled(built, tmp_path):
    assert tile_starts(56, 32) == [0, 24] and tile_starts(76, 32) == [0, 32, 44]
    assert tile_starts(64, 32) == [0, 32] and tile_starts(20, 32) == [0]
    # A position (both parts), and a movie that failed upstream (its montage 404'd).
    drop = ["x_01_y_00", "3D_example_x_01_y_01_part_1"]
    cfg = dataclasses.replace(
        built.cfg,
        export=dataclasses.replace(built.cfg.export, reshape_size=32, samples_to_drop=drop),
    )
    m = export_splits(Store(built.tmp / "clean"), SOURCE, cfg, EXPORT, tmp_path, ["train"])
    assert m["movies_dropped"] == 2 and m["entry_shape"] == [4, 32, 32, 1]
    with np.load(tmp_path / "train/3D_example_part_0.npz", allow_pickle=False) as npz:
        y, ids = npz["y"], list(npz["ids"])
    assert len(ids) == 3 * 6 and not any("x_01_y_00" in i for i in ids)
    for tile in y:
        values = np.unique(tile)
        assert list(values) == list(range(len(values)))  # 1..N in every tile
    # A name of the right shape that the job lacks fails at export; one of no shape at compose.
    bad = dataclasses.replace(
        cfg, export=dataclasses.replace(cfg.export, samples_to_drop=["x_07_y_07"])
    )
    with pytest.raises(ConfigError, match="x_07_y_07.*name no movie or position"):
        export_splits(Store(built.tmp / "clean"), SOURCE, bad, EXPORT, tmp_path, ["train"])
    with pytest.raises(ConfigError, match=r"\['x_7'\] name no position"):
        dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, samples_to_drop=["x_7"]))


def test_recombine_stitches_positions_with_unique_labels(built, job, tmp_path):
    by_movie = dataclasses.replace(built.cfg.clean, split_by=Figure8SplitBy.movie)
    cfg = dataclasses.replace(
        built.cfg, clean=by_movie, frames=dataclasses.replace(built.cfg.frames, mode="recombine")
    )
    cfg.frames.mode = type(built.cfg.frames.mode)("recombine")
    with pytest.raises(ConfigError, match="whole job in one split"):
        dataclasses.replace(cfg, clean=built.cfg.clean)
    _, m = extract_frames(Store(built.tmp / "fetch"), SOURCE, cfg, tmp_path / "frames", 1 << 20)
    assert m["clips_ok"] == 1 and m["reasons"] == {
        "montage x_01_y_01 not fetched (missing: http 404)": 1
    }
    store = Store(tmp_path / "frames")
    chopper = chopper_of(job)
    for t in range(4):
        full = decode_array(store.read(f"3D_example_part_0_frame_{t:02d}/annotated"))
        raw = decode_array(store.read(f"3D_example_part_0_frame_{t:02d}/raw"))
        assert full.shape == raw.shape == (96, 128)
        assert np.array_equal(raw, decode_array(job.inputs[f"raw/raw_frame_{t}.tif"]))
        seen = set()
        for x, y in chopper.positions():
            y0, y1, x0, x1 = chopper.owned(x, y)
            mine = full[y0:y1, x0:x1]
            piece = job.dirty[(x, y, 0)][t]
            py, px = (
                y0 - y * chopper.step_y + chopper.overlapping_y_pix,
                x0 - x * chopper.step_x + chopper.overlapping_x_pix,
            )
            assert same_partition(mine, piece[py : py + y1 - y0, px : px + x1 - x0]) == 1.0
            values = set(np.unique(mine).tolist()) - {0}
            assert not values & seen  # no label shared by two positions
            seen |= values


@pytest.mark.parametrize(
    "chopper, covered",
    [
        (Chopper(97, 130, 2, 3, 4, 4), (97, 130)),  # the last overlap reaches the edge
        (Chopper(100, 100, 3, 3, 0, 0), (99, 99)),  # it cannot: row and column 99 never shown
    ],
)
def test_stitching_covers_what_the_positions_cover(chopper, covered):
    assert chopper.covered == covered
    frame = np.arange(1, chopper.original_y * chopper.original_x + 1).reshape(
        chopper.original_y, chopper.original_x
    )
    pieces = {xy: chopper.piece(frame, *xy)[None] for xy in chopper.positions()}
    full = stitch(pieces, chopper)[0]
    assert full.shape == covered
    assert (full > 0).all() and len(np.unique(full)) == full.size


def test_raw_frames_are_taken_in_natural_order():
    names = ["raw_frame_10.tif", "raw_frame_9.tif", "raw_frame_1.tif", "raw_frame_01.tif"]
    assert sorted(names, key=natural_key) == [
        "raw_frame_01.tif",  # equal numbers: the name decides, never the disk's order
        "raw_frame_1.tif",
        "raw_frame_9.tif",
        "raw_frame_10.tif",
    ]
    assert sorted(["f²2", "f1"], key=natural_key) == ["f1", "f²2"]  # no ASCII digits: text


def test_the_sheet_and_series_are_deterministic(built):
    png, series = SOURCE.draw(built.cfg, Store(built.tmp / "clean"))
    again, _ = SOURCE.draw(built.cfg, Store(built.tmp / "clean"))
    assert png == again
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.size[0] == 3 * 192
    assert sum(r["frames"] for r in series) == 28


def test_a_wrong_key_stops_fetch_and_writes_nothing(tmp_path, job, monkeypatch):
    job.write_inputs(tmp_path / "input")
    monkeypatch.setenv("FIGURE_EIGHT_KEY", "wrong")
    with Figure8Standin(job, key=KEY, queued=0) as srv:
        with pytest.raises(CredentialRejected, match="FIGURE_EIGHT_KEY") as err:
            run_fetch(conf(srv.url, tmp_path / "input"), tmp_path / "out", tmp_path / "cache")
    assert "wrong" not in str(err.value) and err.value.exit_code == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "report, message",
    [
        (b"PK\x05\x06" + b"\0" * 18, "report of job 1363594: expected exactly one .csv"),
        ("no-csv", "one .csv member in the zip, found readme.txt"),
        ("columns", "lacks the column"),
    ],
)
def test_a_bad_report_is_one_clear_error(tmp_path, job, monkeypatch, report, message):
    job.write_inputs(tmp_path / "input")
    monkeypatch.setenv("FIGURE_EIGHT_KEY", KEY)
    if report == "no-csv":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("readme.txt", "hello")
        report = buf.getvalue()
    elif report == "columns":
        report = report_zip([{"_unit_id": 1}], columns=["_unit_id", "judgment"])
    with Figure8Standin(job, key=KEY, queued=0) as srv:
        srv.report_bytes = report
        with pytest.raises(MetadataError, match=message):
            run_fetch(conf(srv.url, tmp_path / "input"), tmp_path / "out", tmp_path / "cache")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"fetch": {"report_type": "workset"}}, "no annotation per image"),
        ({"fetch": {"api": "http://api.example.com/v1"}}, "https"),
        ({"fetch": {"api": "https://api.example.com/v1?key=1"}}, "scheme://host"),
        ({"exports": ["voc"]}, "exports must be"),
        ({"classes": ["cell", "nucleus"]}, "one class"),
        ({"frames": {"colours": {"#00000g": 1}}}, "#rrggbb"),
        ({"clean": {"connectivity": 3}}, "connectivity"),
    ],
)
def test_bad_settings_fail_at_compose(changes, message):
    with pytest.raises(ConfigError, match=message):
        source_defaults("figure8", **changes)


def png16_rgb(arr: np.ndarray) -> bytes:
    """Return a 16-bit RGB PNG (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_hostile_annotations_are_each_one_movies_failure(tmp_path, job, monkeypatch):
    job.write_inputs(tmp_path / "input")
    monkeypatch.setenv("FIGURE_EIGHT_KEY", KEY)
    hostile = dataclasses.replace(job, annotations=dict(job.annotations))
    name = "3D_example_x_{}_y_{}_montage_{}_annotation.png".format
    small = Image.new("RGB", (40, 30))
    buf = io.BytesIO()
    small.save(buf, format="PNG")
    hostile.annotations[name(1, 0, 0)] = buf.getvalue()  # too small for the logged geometry
    wide = np.asarray(Image.open(io.BytesIO(job.annotations[name(0, 1, 0)])))
    hostile.annotations[name(0, 1, 0)] = png16_rgb(wide)  # 16-bit RGB: Pillow would lose bits
    # RGBA with a white but transparent background: still background.
    rgb = np.asarray(Image.open(io.BytesIO(job.annotations[name(1, 1, 0)])).convert("RGB"))
    alpha = np.where(rgb.any(axis=2), 255, 0).astype(np.uint8)
    rgba = np.dstack([np.where(alpha[..., None] > 0, rgb, 255), alpha]).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    hostile.annotations[name(1, 1, 0)] = buf.getvalue()
    with Figure8Standin(hostile, key=KEY, queued=0) as srv:
        srv.faults.set_default(f"annotations/{name(0, 0, 1)}", "corrupt")
        cfg = conf(srv.url, tmp_path / "input")
        run_fetch(cfg, tmp_path / "fetch", tmp_path / "cache")
    _, m = extract_frames(Store(tmp_path / "fetch"), SOURCE, cfg, tmp_path / "frames", 1 << 20)
    reasons = m["reasons"]
    assert m["clips_ok"] == 4 and sum(reasons.values()) == 4
    assert any(r.startswith("montage not fetched (corrupt: truncated PNG") for r in reasons)
    assert "montage tiles are 8x9, the chopper log's positions 76x56" in reasons
    assert any(
        r.startswith("annotation montage: 16-bit RGB PNGs are not read exactly") for r in reasons
    )
    store = Store(tmp_path / "frames")
    labels = decode_array(store.read("3D_example_x_01_y_01_part_0_frame_01/annotated"))
    assert np.array_equal(labels, job.dirty[(1, 1, 0)][1])


def test_an_oversized_report_is_refused_while_it_downloads(tmp_path, job, monkeypatch):
    job.write_inputs(tmp_path / "input")
    monkeypatch.setenv("FIGURE_EIGHT_KEY", KEY)
    with Figure8Standin(job, key=KEY, queued=0) as srv:
        cfg = conf(srv.url, tmp_path / "input", fetch={"max_report_bytes": 1000})
        with pytest.raises(StageError, match="report of job 1363594 could not be downloaded"):
            run_fetch(cfg, tmp_path / "out", tmp_path / "cache")
    assert not (tmp_path / "out").exists()
