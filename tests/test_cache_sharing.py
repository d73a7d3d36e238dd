"""One download cache shared by concurrent runs: packed objects go only when no run needs them."""

import hashlib
import json

from stages.net.sharing import CacheUsers


def put(root, data: bytes):
    digest = hashlib.sha256(data).hexdigest()
    path = root / "objects" / digest[:2] / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def names(*paths):
    return [p.name for p in paths]


def test_objects_are_deleted_only_by_the_caches_sole_user(tmp_path):
    a, b = CacheUsers(tmp_path), CacheUsers(tmp_path)  # two runs (two open lock files)
    mine, theirs = put(tmp_path, b"packed by a"), put(tmp_path, b"packed by b")
    # b still runs: a's objects stay (b may read them), listed for later.
    assert a.release(names(mine)) == 0
    assert mine.exists()
    assert len(list((tmp_path / "released").iterdir())) == 1
    a.close()
    # b is alone now: its objects and those a listed go, and the list with them.
    assert b.release(names(theirs)) == 2
    assert not mine.exists() and not theirs.exists()
    assert not list((tmp_path / "released").iterdir())
    # b still holds its shared lock after releasing: a new run waits for nothing but it.
    c = CacheUsers(tmp_path)
    kept = put(tmp_path, b"packed by c")
    assert c.release(names(kept)) == 0 and kept.exists()
    b.close()
    assert c.release([]) == 1 and not kept.exists()
    c.close()


def test_a_release_list_never_deletes_outside_the_objects(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    (tmp_path / "cache" / "released").mkdir(parents=True)
    (tmp_path / "cache" / "released" / "x.txt").write_text(f"{outside}\n../../precious.txt\n")
    users = CacheUsers(tmp_path / "cache")
    assert users.release([]) == 0
    users.close()
    assert outside.read_text() == "keep"


def test_two_runs_releasing_at_once_leave_nothing_listed_once_both_close(tmp_path):
    a, b = CacheUsers(tmp_path), CacheUsers(tmp_path)
    first, second = put(tmp_path, b"a's"), put(tmp_path, b"b's")
    assert a.release(names(first)) == 0 and b.release(names(second)) == 0  # each sees the other
    a.close()  # b still runs: nothing goes
    assert first.exists() and second.exists()
    b.close()  # the last user sweeps both lists
    assert not first.exists() and not second.exists()
    assert not list((tmp_path / "released").iterdir())


def test_a_run_that_keeps_its_objects_never_sweeps_them(tmp_path):
    a, b = CacheUsers(tmp_path), CacheUsers(tmp_path)
    shared = put(tmp_path, b"used by both")
    assert a.release(names(shared)) == 0  # a is done with it; b is still running
    b.keep = {shared.name}  # b ends with failures to retry: it keeps what it downloaded
    a.close()
    b.close()
    assert shared.exists()


def test_a_relative_cache_root_still_deletes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    obj = put(tmp_path / "cache", b"x")
    users = CacheUsers("cache")
    assert users.release(names(obj)) == 1 and not obj.exists()
    users.close()


def test_only_previous_payloads_that_match_their_sha256_are_reused(tmp_path):
    from stages.core.executor import LocalExecutor
    from stages.core.store import Row
    from stages.fetch import reuse_previous
    from stages.net.download import Downloader
    from stages.pipeline.compose import group_defaults

    def sha(data):
        return hashlib.sha256(data).hexdigest()

    good, bad = b"good bytes", b"bytes damaged in DVC's cache"
    shard = tmp_path / "shard.tar"
    shard.write_bytes(b"header" + good + bad)
    previous = {
        "http://h/a": (sha(good), str(shard), 6, len(good)),
        "http://h/b": (sha(b"what was packed"), str(shard), 6 + len(good), len(bad)),
        "http://h/c": (sha(good), str(tmp_path / "gone.tar"), 0, len(good)),
    }
    rows = [Row(k, "t", k, url=f"http://h/{k}", status="pending") for k in "abc"]
    dl = Downloader(group_defaults("fetch"), tmp_path / "cache", executor=LocalExecutor(2))
    try:
        assert reuse_previous(dl, rows, previous) == 1
        assert dl.cache.object_path(sha(good)).read_bytes() == good
        assert dl.ledger.get("http://h/a").status == "ok"
        assert dl.ledger.get("http://h/b") is None and dl.ledger.get("http://h/c") is None
        assert not list((tmp_path / "cache" / "tmp").iterdir())
    finally:
        dl.close()


def test_a_first_build_is_said_plainly_and_a_damaged_one_apart(tmp_path, caplog):
    from dvc.repo import Repo

    from stages.pipeline.previous import previous_payloads

    Repo.init(str(tmp_path), no_scm=True).close()
    out = tmp_path / "data" / "x" / "fetch"  # DVC deleted it before running the stage
    first = "fetch@x: first build of data/x/fetch (no earlier build in DVC's cache)"
    with caplog.at_level("INFO", logger="stages.pipeline.previous"):
        assert previous_payloads(out, "fetch@x") == {}  # no dvc.lock at all
        md5 = "0123456789abcdef0123456789abcdef.dir"
        lock = {
            "schema": "2.0",
            "stages": {"fetch@x": {"outs": [{"path": "data/x/fetch", "md5": md5}]}},
        }
        (tmp_path / "dvc.lock").write_text(json.dumps(lock))  # JSON is YAML
        assert previous_payloads(out, "fetch@x") == {}  # recorded, but not in DVC's cache
    ours = [r for r in caplog.records if r.name == "stages.pipeline.previous"]
    assert [r.getMessage() for r in ours] == [first, first]
    assert all(r.levelname == "INFO" and ".dvc" not in r.getMessage() for r in ours)
    caplog.clear()
    listing = tmp_path / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    listing.parent.mkdir(parents=True)
    listing.write_text("[{not json")
    with caplog.at_level("INFO", logger="stages.pipeline.previous"):
        assert previous_payloads(out, "fetch@x") == {}
    (record,) = caplog.records
    assert record.levelname == "WARNING" and "first build" not in record.getMessage()
    assert record.getMessage().startswith("fetch@x: the earlier build of data/x/fetch in DVC's")
    assert "damaged" in record.getMessage() and ".dvc" not in record.getMessage()
