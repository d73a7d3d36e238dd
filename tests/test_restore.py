"""A failed stage puts back the build dvc.lock records: from DVC's cache, else from git."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from pathlib import Path

import pytest
import yaml

from stages.pipeline.restore import failed_copy_path, remember, restore
from tests.conftest import BIN, git


def md5(data: bytes) -> str:
    """Return the md5 DVC records for bytes."""
    return hashlib.md5(data).hexdigest()


def cache_put(root: Path, data: bytes, suffix: str = "") -> str:
    """Put bytes in the repo's DVC cache as DVC would (a directory's listing: `.dir`); return
    their md5."""
    digest = md5(data) + suffix
    path = root / ".dvc" / "cache" / "files" / "md5" / digest[:2] / digest[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o444)
    return digest


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git + DVC repo whose dvc.lock records a stage `s` with a directory, a metrics file
    and a plot; the directory's files and the metrics are in the cache, the plot in git only."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, check=True)
    subprocess.run(  # as this project's .dvc/config has it
        [str(BIN / "dvc"), "config", "cache.type", "hardlink,copy"], cwd=root, check=True
    )
    files = {"a.bin": b"first payload", "sub/b.bin": b"second payload"}
    listing = [{"md5": cache_put(root, data), "relpath": rel} for rel, data in files.items()]
    dir_md5 = cache_put(root, json.dumps(listing).encode(), ".dir")
    m, plot = b'{"lila": {"fetched": 2}}\n', b"cls,n\na,1\n"
    (root / "data" / "lila" / "plots").mkdir(parents=True)
    (root / "data" / "lila" / "plots" / "p.csv").write_bytes(plot)
    git(root, "add", "data/lila/plots/p.csv")
    git(root, "commit", "-qm", "plot")
    lock = {
        "schema": "2.0",
        "stages": {
            "s": {
                "cmd": "true",
                "outs": [
                    {"path": "data/lila/out", "hash": "md5", "md5": dir_md5},
                    {"path": "data/lila/metrics/m.json", "hash": "md5", "md5": cache_put(root, m)},
                    {"path": "data/lila/plots/p.csv", "hash": "md5", "md5": md5(plot)},
                ],
            }
        },
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    (root / "data" / "lila" / "plots" / "p.csv").unlink()  # DVC deleted it before the run
    return root


def test_outputs_come_back_from_the_cache_and_git_and_the_failed_run_moves_aside(repo, caplog):
    partial = repo / "data" / "lila" / "out"
    partial.mkdir(parents=True)
    (partial / "half.part").write_bytes(b"half written")
    written = repo / "data" / "lila" / "metrics" / "m.json"
    written.parent.mkdir(parents=True)
    written.write_text('{"lila": {"fetched": 0}}\n')  # what the failed run counted
    with caplog.at_level(logging.INFO, "stages.pipeline.restore"):
        restore(repo, "s")
    out = repo / "data" / "lila" / "out"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a.bin",
        "sub/b.bin",
    ]
    assert (out / "sub" / "b.bin").read_bytes() == b"second payload"
    assert (out / "a.bin").stat().st_nlink == 2  # linked to the cache, as cache.type allows
    assert json.loads(written.read_text()) == {"lila": {"fetched": 2}}
    assert (repo / "data" / "lila" / "plots" / "p.csv").read_bytes() == b"cls,n\na,1\n"
    kept = repo / failed_copy_path("data/lila/metrics/m.json")
    assert kept == repo / "data/lila/failed/metrics/m.json"
    assert json.loads(kept.read_text()) == {"lila": {"fetched": 0}}
    assert "s failed: its outputs are back as dvc.lock records them" in caplog.text
    assert not list(repo.rglob("*.restore"))


def test_what_neither_cache_nor_git_holds_is_left_as_it_is_and_named(repo, caplog):
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for out in lock["stages"]["s"]["outs"][:2]:  # the directory listing and the metrics
        (cache / out["md5"][:2] / out["md5"][2:]).unlink()
    written = repo / "data" / "lila" / "metrics" / "m.json"
    written.parent.mkdir(parents=True)
    written.write_text("this run's\n")
    with caplog.at_level(logging.INFO, "stages.pipeline.restore"):
        restore(repo, "s")
    assert written.read_text() == "this run's\n"  # nothing to put in its place: kept
    assert not (repo / "data" / "lila" / "out").exists()
    assert (repo / "data" / "lila" / "plots" / "p.csv").is_file()
    line = next(r.message for r in caplog.records if r.levelno == logging.WARNING)
    assert "could not restore data/lila/out, data/lila/metrics/m.json" in line
    assert "git checkout -- dvc.lock params.yaml data/ && dvc checkout" in line


def test_a_stage_that_succeeds_keeps_its_small_files_in_dvcs_cache(repo, monkeypatch):
    metrics = repo / "data" / "lila" / "metrics" / "new.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"lila": {"fetched": 7}}\n')
    digest = md5(metrics.read_bytes())
    kept = repo / ".dvc" / "cache" / "files" / "md5" / digest[:2] / digest[2:]
    remember([metrics.relative_to(repo)])
    assert not kept.exists()  # not a DVC stage: nothing to keep
    monkeypatch.setenv("DVC_STAGE", "s")
    monkeypatch.setenv("DVC_ROOT", str(repo))
    remember([metrics.relative_to(repo), Path("data/lila/absent.json")])
    assert kept.read_bytes() == metrics.read_bytes()
    assert metrics.stat().st_nlink == 1  # a copy: the git-tracked file stays writable


def test_a_stage_dvc_lock_does_not_record_changes_nothing(repo):
    (repo / "x").write_text("kept")
    restore(repo, "never-built")
    assert (repo / "x").read_text() == "kept" and not (repo / "data" / "lila" / "out").exists()
