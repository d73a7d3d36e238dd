"""import@<source>: a video folder sent to a target by content, as one job in shards."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stages.core.errors import ConfigError
from stages.core.store import Store
from stages.import_media import run_import
from stages.import_status import status_lines
from stages.pipeline.compose import group_defaults, source_defaults
from stages.targets import TargetBusy
from stages.targets.folder import FolderTarget
from stages.targets.record import RECORD, read_record, write_record

RETRY = group_defaults("fetch", retries=2, backoff=0.01)


def settings(target: Path, **changes):
    """The shipped import settings, enabled, sending to a folder target."""
    import_to = {
        "enabled": True,
        "target": "folder",
        "folder": str(target),
        "shard_size": 2,
        **changes,
    }
    return source_defaults("videodir", import_to=import_to).import_to


def media_files(root: Path) -> list[Path]:
    """Return the files a folder target holds (sidecars and leftovers aside)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix == ".mp4")


def test_files_are_sent_once_by_content_in_shards(tmp_path, fetched):
    cfg = settings(tmp_path / "target")
    record, job, metrics = run_import(
        cfg, Store(fetched), FolderTarget(cfg.folder), "videodir", RETRY
    )
    assert metrics["files"] == metrics["sent"] == 6 and metrics["failed"] == 0
    assert [s["shard_id"] for s in job["shards"]] == ["0000", "0001", "0002"]
    assert all(s["status"] == "complete" for s in job["shards"]) and job["status"] == "complete"
    assert [r["timestamp"] for r in record] == sorted(r["timestamp"] for r in record)
    files = media_files(tmp_path / "target")
    assert len(files) == 6  # the copy under another name is the same file
    assert {f.parent.name for f in files} == {"lobby", "gate"}
    side = json.loads(Path(f"{files[0]}.json").read_text())
    assert side["sha256"] in {r["sha256"] for r in record} and side["timestamp"].endswith("Z")
    # A re-run sends nothing: every file is found on the target by its hash.
    again, job2, m2 = run_import(cfg, Store(fetched), FolderTarget(cfg.folder), "videodir", RETRY)
    assert m2["sent"] == 0 and m2["present"] == 6 and job2 == job
    assert [r["target_id"] for r in again] == [r["target_id"] for r in record]
    assert media_files(tmp_path / "target") == files


def test_per_camera_settings_reach_the_target(tmp_path, fetched):
    cameras = {"lobby": {"section": "entrance", "short_side": 240}}
    cfg = settings(tmp_path / "target", short_side=480, cameras=cameras)
    run_import(cfg, Store(fetched), FolderTarget(cfg.folder), "videodir", RETRY)
    sides = {
        p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "target").rglob("*.json")
    }
    assert sides["entrance"]["settings"] == {"section": "entrance", "short_side": 240}
    assert sides["gate"]["settings"] == {"section": "gate", "short_side": 480}


class Interrupting(FolderTarget):
    """A folder target whose copy is cut off after a few files (as a kill would)."""

    def __init__(self, root, after: int):
        super().__init__(root)
        self.left = after

    def upload(self, item, place):
        self.left -= 1
        if self.left < 0:
            with item.open() as src:  # half a file lands under the temporary name
                (self.root / place / "partial.mp4.part").write_bytes(src.read(1000))
            raise KeyboardInterrupt
        return super().upload(item, place)


def test_an_interrupted_import_resumes_without_duplicates(tmp_path, fetched):
    cfg = settings(tmp_path / "target", workers=1)
    with pytest.raises(KeyboardInterrupt):
        run_import(cfg, Store(fetched), Interrupting(cfg.folder, after=2), "videodir", RETRY)
    assert len(media_files(tmp_path / "target")) == 2
    record, job, metrics = run_import(
        cfg, Store(fetched), FolderTarget(cfg.folder), "videodir", RETRY
    )
    assert (metrics["present"], metrics["sent"]) == (2, 4) and job["status"] == "complete"
    assert len(media_files(tmp_path / "target")) == 6
    write_record(tmp_path / "import", record, job)
    lines = status_lines(*read_record(tmp_path / "import"), FolderTarget(cfg.folder).existing())
    assert lines[0] == f"job {job['job_id']} (folder): 6 files, 3 shards, recorded complete"
    assert all("on the target now complete (2/2)" in line for line in lines[1:])
    table = pq.read_table(tmp_path / "import" / RECORD)
    assert table.num_rows == 6 and set(table.column("status").to_pylist()) == {"imported"}


def test_a_target_that_fails_a_file_fails_its_shard_only(tmp_path, fetched):
    cfg = settings(tmp_path / "target")
    target = FolderTarget(cfg.folder)
    (tmp_path / "target" / "gate").write_text("a file where the section folder should be")
    record, job, metrics = run_import(cfg, Store(fetched), target, "videodir", RETRY)
    assert metrics["failed"] == 3 and metrics["sent"] == 3 and job["status"] == "shards_failed"
    assert {s["status"] for s in job["shards"]} >= {"failed"}
    assert all(r["reason"] for r in record if r["status"] == "failed")


def test_import_sources_come_from_conf(tmp_path):
    from stages.pipeline.compose import compose

    conf = tmp_path / "conf"
    subprocess.run(["cp", "-r", str(Path(__file__).parents[1] / "conf"), str(conf)], check=True)
    path = conf / "source" / "videodir.yaml"
    path.write_text(path.read_text().replace("  enabled: false", "  enabled: true"))
    assert compose(conf)["import_sources"] == {"videodir": {}}
    with pytest.raises(ConfigError, match="shard_size"):
        source_defaults("videodir", import_to={"shard_size": 0})


def test_import_status_needs_a_record(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "stages.import_status", "videodir", "--record", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 2 and "no import record" in proc.stderr


class Busy(FolderTarget):
    """A folder target that refuses each file `times` times first (429 with Retry-After 0)."""

    def __init__(self, root, times: int):
        super().__init__(root)
        self.times, self.calls = times, Counter()

    def upload(self, item, place):
        self.calls[item.sha256] += 1
        if self.calls[item.sha256] <= self.times:
            raise TargetBusy("http 429", retry_after=0.0)
        return super().upload(item, place)


def test_a_busy_target_is_retried_then_given_up_per_file(tmp_path, fetched):
    cfg = settings(tmp_path / "target")
    busy = Busy(cfg.folder, times=2)
    _, job, metrics = run_import(cfg, Store(fetched), busy, "videodir", RETRY)
    assert metrics["sent"] == 6 and set(busy.calls.values()) == {3}
    always = Busy(tmp_path / "other", times=99)
    record, job, metrics = run_import(cfg, Store(fetched), always, "videodir", RETRY)
    assert metrics["failed"] == 6 and job["status"] == "shards_failed"
    assert {r["reason"] for r in record} == {"target busy after 3 attempts: http 429"}


def test_a_file_that_vanishes_mid_run_is_one_clear_error_and_loses_nothing(tmp_path, monkeypatch):
    from stages.core.errors import StageError
    from stages.core.executor import LocalExecutor
    from stages.fetch import fetch
    from stages.net.cache import ObjectCache
    from stages.sources import load
    from standins.video import make_folder

    make_folder(tmp_path / "input")
    cfg = source_defaults("videodir", fetch={"root": str(tmp_path / "input")})
    store_cfg = group_defaults("store")
    real, seen = ObjectCache.import_file, []

    gone = tmp_path / "input" / "lobby" / "animal" / "20240502_063000.mp4"

    def vanishing(self, src):  # deleted after the scan, before its hashing (sorted last)
        seen.append(src)
        gone.unlink(missing_ok=True)
        return real(self, src)

    monkeypatch.setattr(ObjectCache, "import_file", vanishing)
    fetch_cfg = group_defaults("fetch", workers=1)
    with pytest.raises(StageError, match=r"cannot import .*\.mp4 into the cache: No such file"):
        fetch(
            load("videodir"),
            cfg,
            fetch_cfg,
            store_cfg,
            tmp_path / "fetch",
            tmp_path / "c",
            executor=LocalExecutor(2),
        )
    assert not (tmp_path / "fetch").exists()
    kept = sorted(p.name for p in (tmp_path / "c" / "objects").rglob("*") if p.is_file())
    assert kept  # what was hashed before stays in the cache for the next run
    monkeypatch.undo()
    rows, metrics = fetch(
        load("videodir"),
        cfg,
        fetch_cfg,
        store_cfg,
        tmp_path / "fetch",
        tmp_path / "c",
        executor=LocalExecutor(2),
    )
    assert metrics["ok"] == len(rows) == 5  # the vanished file is simply not there any more
