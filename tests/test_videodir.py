"""Video-folder source: paths to metadata, content ids, per-camera settings, end to end."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from stages.core.errors import ConfigError, MetadataError
from stages.core.executor import LocalExecutor
from stages.core.store import Row, Store
from stages.fetch import fetch
from stages.pipeline.compose import group_defaults, source_defaults
from stages.sources.videodir import SOURCE
from stages.sources.videodir.scan import parse_timestamp
from standins.video import make_clip
from tests.families import extract_frames

REGEX = r"(?P<camera>[^/]+)/(?:(?P<label>[^/]+)/)?(?P<timestamp>\d{8}_\d{6})\.\w+"
CLIPS = {  # path under the root -> make_clip seed (equal seeds give equal bytes)
    "camA/person/20240501_120000.mp4": 0,
    "camA/vehicle/20240501_120500.mp4": 1,
    "camA/20240501_121000.mp4": 2,  # no label folder
    "camA/Dog/20240501_122000.mp4": 3,  # a label that is not a class
    "camB/animal/20240501_130000.MOV": 4,
    "camB/person/20240601_000000.mp4": 0,  # the same bytes as camA/person/...
    "camX/person/20240501_140000.mp4": 5,  # an excluded camera
}
ZERO = "camC/person/20240501_150000.mp4"
UNMATCHED = ["camA/notes.mp4", "camA/person/2024-05-01.mp4", "camB/20241399_000000.mp4"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Encode each distinct tiny clip once (96x64, 1 s at 10 fps)."""
    root = tmp_path_factory.mktemp("clips")
    for seed in sorted(set(CLIPS.values())):
        make_clip(root / f"{seed}.mp4", seconds=1, fps=10, width=96, height=64, seed=seed)
    return root


@pytest.fixture
def tree(tmp_path, clips) -> Path:
    """A folder of videos: nested cameras, a duplicate, an empty file, names that don't match."""
    root = tmp_path / "input"
    for rel, seed in CLIPS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clips / f"{seed}.mp4", root / rel)
    (root / ZERO).parent.mkdir(parents=True)
    (root / ZERO).write_bytes(b"")
    for rel in UNMATCHED:
        shutil.copyfile(clips / "0.mp4", root / rel)
    (root / "README.txt").write_text("not a video")
    return root


def override(**values) -> dict:
    """A camera's frames settings: the given values, the global ones for the rest."""
    return {"short_side": None, "fps": None, "num_frames": None, "quality": None, **values}


def conf(root: Path, fetch=None, frames=None, **changes):
    """The project's conf/source/videodir.yaml, enabled, reading `root`."""
    fetch = {
        "root": str(root),
        "regex": REGEX,
        "cameras": {"camX": {"include": False}},
        **(fetch or {}),
    }
    frames = {"short_side": 32, "cameras": {"camB": override(short_side=16)}, **(frames or {})}
    return source_defaults("videodir", fetch=fetch, frames=frames, enabled=True, **changes)


def run_fetch(tmp_path: Path, cfg, out: str = "fetch"):
    return fetch(
        SOURCE,
        cfg,
        group_defaults("fetch"),
        group_defaults("store"),
        tmp_path / out,
        cache_dir=tmp_path / "cache",
        executor=LocalExecutor(2),
    )


def test_paths_become_items_by_content(tmp_path, tree, clips):
    rows, metrics = run_fetch(tmp_path, conf(tree))
    by_path = {p: r for r in rows for p in r.meta["paths"]}
    assert metrics["ok"] == len(rows) == 6  # 6 distinct contents (camX excluded)

    dup = by_path["camA/person/20240501_120000.mp4"]
    assert dup is by_path["camB/person/20240601_000000.mp4"]
    assert dup.item_id == "sha256-" + sha((clips / "0.mp4").read_bytes())
    assert dup.sha256 == dup.item_id.removeprefix("sha256-")
    # The first path in sorted order gives the item's identity and metadata...
    assert dup.source_id == "camA/person/20240501_120000.mp4"
    assert dup.url == "file:camA/person/20240501_120000.mp4"
    assert dup.meta["camera"] == "camA"
    assert dup.meta["timestamp"] == "2024-05-01T12:00:00Z"
    assert dup.labels == ["person"]
    # ...and every path's own is kept.
    assert dup.meta["paths"] == [
        "camA/person/20240501_120000.mp4",
        "camB/person/20240601_000000.mp4",
    ]
    assert [f["camera"] for f in dup.meta["files"]] == ["camA", "camB"]
    assert dup.meta["files"][1]["timestamp"] == "2024-06-01T00:00:00Z"
    assert dup.meta["files"][1]["label"] == "person"

    mov = by_path["camB/animal/20240501_130000.MOV"]
    assert (mov.meta["ext"], mov.labels, mov.meta["label"]) == (".mov", ["animal"], "animal")
    assert by_path["camA/20240501_121000.mp4"].labels == []  # no label folder
    assert by_path["camA/Dog/20240501_122000.mp4"].labels == []  # not a class: kept, unlabeled
    zero = by_path[ZERO]
    assert (zero.bytes, zero.sha256, zero.status) == (0, sha(b""), "ok")
    assert not any(p.startswith("camX/") for p in by_path)

    # The store holds the files' exact bytes.
    store = Store(tmp_path / "fetch")
    assert store.read(dup.item_id) == (clips / "0.mp4").read_bytes()

    stats = metrics["selection"]
    assert stats["files_seen"] == len(CLIPS) + 1 + len(UNMATCHED)
    assert stats["other_files"] == 1  # README.txt
    assert stats["matched"] == len(CLIPS) + 1
    assert stats["unmatched"] == len(UNMATCHED)
    assert stats["unmatched_paths"] == sorted(UNMATCHED)
    assert stats["unmatched_reasons"] == {
        "path does not match fetch.regex": 2,
        "timestamp does not parse with fetch.timestamp_format": 1,
    }
    assert stats["duplicates"] == 1
    assert stats["excluded_by_camera"] == {"camX": 1}
    assert stats["items_per_camera"] == {"camA": 4, "camB": 1, "camC": 1}
    assert stats["labels_unknown"] == {"Dog": 1}
    assert stats["unlabeled"] == 1
    assert stats["cameras_not_seen"] == []
    assert metrics["classes"] == {"person": 2, "vehicle": 1, "animal": 1}


def test_a_renamed_file_is_the_same_item(tmp_path, tree):
    cfg = conf(tree)
    before, _ = run_fetch(tmp_path, cfg)
    old = {r.source_id: r.item_id for r in before}
    os.rename(tree / "camA/vehicle/20240501_120500.mp4", tree / "camA/vehicle/20240502_090000.mp4")
    after, metrics = run_fetch(tmp_path, cfg)  # the cached objects are reused
    new = {r.source_id: r.item_id for r in after}
    assert new["camA/vehicle/20240502_090000.mp4"] == old["camA/vehicle/20240501_120500.mp4"]
    assert {r.item_id for r in after} == {r.item_id for r in before}
    assert metrics["ok"] == len(after)


def test_the_bytes_hashed_are_the_bytes_kept(tmp_path):
    from stages.net.download import Downloader

    dl = Downloader(group_defaults("fetch"), tmp_path / "cache", executor=LocalExecutor(2))
    try:
        src = tmp_path / "a.mp4"
        src.write_bytes(b"first" * 100_000)
        first, size = dl.cache.import_file(str(src))
        assert first == sha(src.read_bytes()) and size == 500_000
        # The input is replaced by another file: a new item; the cached one keeps its bytes.
        (tmp_path / "b.mp4").write_bytes(b"second" * 100_000)
        (tmp_path / "b.mp4").replace(src)
        second, _ = dl.cache.import_file(str(src))
        assert second == sha(src.read_bytes()) != first
        assert sha(dl.cache.object_path(first).read_bytes()) == first
        assert not list((tmp_path / "cache" / "tmp").iterdir())
    finally:
        dl.close()


def test_the_root_is_relative_to_the_working_directory(tmp_path, tree, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows, metrics = run_fetch(tmp_path, conf(Path("input")))
    assert metrics["selection"]["root"] == "input"
    assert len(rows) == 6
    with pytest.raises(ConfigError, match="not a folder"):
        run_fetch(tmp_path, conf(Path("nowhere")))


def test_per_camera_frames_end_to_end(tmp_path, tree):
    cfg = conf(tree)
    rows, _ = run_fetch(tmp_path, cfg)
    camera = {r.item_id: r.meta["camera"] for r in rows}
    row_b = next(r for r in rows if r.meta["camera"] == "camB")
    row_a = next(r for r in rows if r.meta["camera"] == "camA")
    settings = SOURCE.extractor().settings
    assert settings(cfg, row_b).short_side == 16
    assert settings(cfg, row_a).short_side == 32
    assert settings(cfg, row_a).quality == settings(cfg, row_b).quality == 90
    assert settings(cfg, Row("x", "videodir", "x")).short_side == 32  # no camera: global

    frames, metrics = extract_frames(
        Store(tmp_path / "fetch"), SOURCE, cfg, tmp_path / "frames", shard_bytes=1 << 20, workers=1
    )
    sizes: dict[str, set] = {}
    for r in frames:
        if r.status == "ok":
            sizes.setdefault(camera[r.meta["clip"]], set()).add((r.width, r.height))
    assert sizes == {"camA": {(48, 32)}, "camB": {(24, 16)}}  # 96x64 clips, short side 32 / 16
    assert len([r for r in frames if r.status == "ok"]) == 5 * 10  # 5 clips of 10 frames
    (empty,) = [r for r in frames if r.status != "ok"]
    assert empty.meta["paths"] == [ZERO]
    assert empty.status == "corrupt" and "empty" in empty.reason
    assert metrics["clips_failed"] == 1


def test_naive_timestamps_are_read_in_the_configured_zone(tmp_path, tree):
    rows, _ = run_fetch(tmp_path, conf(tree, fetch={"timezone": "America/New_York"}))
    by_path = {r.source_id: r for r in rows}
    assert by_path["camA/person/20240501_120000.mp4"].meta["timestamp"] == "2024-05-01T16:00:00Z"
    # parse_timestamp itself: daylight saving, explicit offsets, Unix seconds.
    berlin = ZoneInfo("Europe/Berlin")
    assert parse_timestamp("20240115_120000", "%Y%m%d_%H%M%S", berlin) == "2024-01-15T11:00:00Z"
    assert parse_timestamp("20240715_120000", "%Y%m%d_%H%M%S", berlin) == "2024-07-15T10:00:00Z"
    # An explicit offset wins over the zone.
    assert parse_timestamp("2024-07-15T12:00:00-0300", "%Y-%m-%dT%H:%M:%S%z", berlin) == (
        "2024-07-15T15:00:00Z"
    )
    assert parse_timestamp("1714564800", "epoch", berlin) == "2024-05-01T12:00:00Z"
    assert parse_timestamp("1714564800.25", "epoch", berlin) == "2024-05-01T12:00:00.250000Z"
    for bad in ("", "-5", "1e9", "nan"):
        with pytest.raises(ValueError):
            parse_timestamp(bad, "epoch", berlin)


def test_epoch_names_and_a_default_label(tmp_path, clips):
    root = tmp_path / "input"
    for i, name in enumerate(["front-1714564800.mp4", "back-1714568400.mp4"]):
        (root / "day1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clips / f"{i}.mp4", root / "day1" / name)
    cfg = conf(
        root,
        fetch={
            "regex": r".*/(?P<camera>\w+?)-(?P<timestamp>\d+)\.mp4",
            "timestamp_format": "epoch",
            "label_group": None,
            "default_label": "Vehicle",
        },
    )
    rows, metrics = run_fetch(tmp_path, cfg)
    got = {r.meta["camera"]: (r.meta["timestamp"], r.labels) for r in rows}
    assert got == {
        "front": ("2024-05-01T12:00:00Z", ["vehicle"]),
        "back": ("2024-05-01T13:00:00Z", ["vehicle"]),
    }
    assert metrics["selection"]["cameras_not_seen"] == ["camX"]


def test_cameras_can_be_excluded_by_default(tmp_path, tree):
    cfg = conf(
        tree,
        fetch={"include_cameras_by_default": False, "cameras": {"camB": {"include": True}}},
    )
    rows, metrics = run_fetch(tmp_path, cfg)
    assert {r.meta["camera"] for r in rows} == {"camB"}
    # camA's copy of camB's clip is excluded, so camB's path alone makes the item.
    assert sorted(p for r in rows for p in r.meta["paths"]) == [
        "camB/animal/20240501_130000.MOV",
        "camB/person/20240601_000000.mp4",
    ]
    assert metrics["selection"]["excluded_by_camera"] == {"camA": 4, "camC": 1, "camX": 1}
    assert metrics["selection"]["duplicates"] == 0


def test_unmatched_files_fail_when_asked(tmp_path, tree):
    with pytest.raises(MetadataError, match=r"3 video\(s\).*camA/notes\.mp4 \(path does not"):
        run_fetch(tmp_path, conf(tree, fetch={"on_unmatched": "fail"}))
    for rel in UNMATCHED:
        (tree / rel).unlink()
    rows, _ = run_fetch(tmp_path, conf(tree, fetch={"on_unmatched": "fail"}))
    assert len(rows) == 6


def test_symlinks_never_lead_out_of_the_root(tmp_path, tree, clips):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(clips / "5.mp4", outside / "20240501_200000.mp4")
    (tree / "camA/person/20240501_200000.mp4").symlink_to(outside / "20240501_200000.mp4")
    (tree / "camD").symlink_to(outside, target_is_directory=True)
    # Inside the root a symlink is one more path of its target's item.
    (tree / "camE").mkdir()
    (tree / "camE/20240501_210000.mp4").symlink_to(tree / "camB/animal/20240501_130000.MOV")
    rows, metrics = run_fetch(tmp_path, conf(tree))
    paths = {p for r in rows for p in r.meta["paths"]}
    assert "camA/person/20240501_200000.mp4" not in paths
    assert not any(p.startswith("camD/") for p in paths)
    (mov,) = [r for r in rows if "camE/20240501_210000.mp4" in r.meta["paths"]]
    assert mov.meta["paths"] == ["camB/animal/20240501_130000.MOV", "camE/20240501_210000.mp4"]
    stats = metrics["selection"]
    assert stats["symlinks_skipped_paths"] == ["camA/person/20240501_200000.mp4", "camD"]
    assert stats["symlinks_skipped"] == 2


def test_the_unmatched_list_is_capped(tmp_path, clips):
    root = tmp_path / "input"
    (root / "cam").mkdir(parents=True)
    for i in range(120):
        (root / "cam" / f"x{i:03d}.mp4").write_bytes(b"")
    _, metrics = run_fetch(tmp_path, conf(root))
    stats = metrics["selection"]
    assert stats["unmatched"] == 120 and len(stats["unmatched_paths"]) == 100
    assert stats["unmatched_paths"][0] == "cam/x000.mp4" and metrics["items"] == 0


@pytest.mark.parametrize(
    "fetch, frames, message",
    [
        ({"regex": r"(?P<cam>[^/]+)/(?P<timestamp>\d+)\.mp4"}, {}, "lacks the named group"),
        ({"regex": r"(?P<camera>[^/]+)/\d+\.mp4"}, {}, "lacks the named group.*timestamp"),
        ({"regex": r"(?P<camera>[^/]+/(?P<timestamp>\d+)"}, {}, "does not compile"),
        ({"regex": r"(?P<camera>\w+)/(?P<ext>\w+)/(?P<timestamp>\d+)"}, {}, "reserved"),
        ({"label_group": "site"}, {}, "not a named group"),
        ({"label_group": None, "default_label": "dog"}, {}, "not one of classes"),
        ({"label_group": None}, {}, "set label_group"),
        ({"timezone": "Mars/Olympus_Mons"}, {}, "IANA"),
        ({"timestamp_format": "%Y%m%d_%H%M%s"}, {}, "strptime"),
        ({"extensions": ["mp4"]}, {}, "extensions"),
        ({"on_unmatched": "maybe"}, {}, "on_unmatched"),
        ({}, {"cameras": {"camB": override(short_side=0)}}, r"frames\.cameras\.camB\.short_side"),
        ({}, {"cameras": {"camB": override(quality=101)}}, r"camB\.quality must be 1\.\.100"),
        ({}, {"cameras": {"camB": {"size": 10}}}, "unknown key"),
        ({}, {"cameras": {"camB": {"short_side": 10}}}, "fps' is required"),
    ],
)
def test_bad_settings_fail_at_config_time(tmp_path, fetch, frames, message):
    with pytest.raises(ConfigError, match=message):
        conf(tmp_path, fetch=fetch, frames=frames)


def test_the_shipped_conf_validates():
    cfg = source_defaults("videodir")
    assert cfg.enabled and SOURCE.video and SOURCE.local_input
    assert cfg.fetch.root == "data/videodir/input"
    assert cfg.frames.for_camera("lobby").short_side == 32
    assert cfg.frames.for_camera("elsewhere").short_side == cfg.frames.short_side
