"""The downloader against a real HTTP server on loopback that misbehaves on purpose."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from stages.core.executor import LocalExecutor
from stages.core.origins import origin_of
from stages.net.credentials import Credential, Credentials
from stages.net.download import Downloader
from stages.net.retry import parse_retry_after
from stages.net.verify import check_structure, goog_md5
from stages.pipeline.compose import group_defaults
from tests.hostile import wait_until

FAST = dict(backoff=0.01, backoff_max=0.05, low_speed_time=5.0, connect_timeout=2.0)


class FakeClock:
    """A monotonic clock that sleeping advances instantly; records every sleep."""

    def __init__(self):
        self.offset, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.offset += seconds


class FrozenClock(FakeClock):
    """A clock that only sleeping moves, so waits come out exact however busy the machine."""

    def __call__(self) -> float:
        return self.offset


def stamp_requests(standin, clock, monkeypatch) -> list[tuple[float, str]]:
    """Record (clock time, path) of every request the stand-in receives; return the list."""
    stamps: list[tuple[float, str]] = []
    record = standin._record

    def stamped(seen):
        stamps.append((clock(), seen.path))
        record(seen)

    monkeypatch.setattr(standin, "_record", stamped)
    return stamps


def images(standin_root, n=None):
    files = json.loads((standin_root / "_datasets.json").read_text())[0]["files"]
    rels = sorted(r for r in files if r.endswith(".jpg"))
    return {r: files[r] for r in rels[:n]}


def url(server, rel):
    return f"{server.url}/gcp/{rel}"


def make(tmp_path, retries=3, clock=None, credentials=None, **kw):
    cfg = group_defaults("fetch", retries=retries, **{**FAST, **kw})
    clock = clock or FakeClock()
    return Downloader(
        cfg,
        tmp_path / "cache",
        ledger_name="t",
        credentials=credentials,
        clock=clock,
        sleep=clock.sleep,
        executor=LocalExecutor(2),
    )


def assert_cache_sound(dl):
    """Every object in the cache is whole: its name is its content's sha256."""
    for obj in dl.cache.objects.rglob("*"):
        if obj.is_file():
            assert hashlib.sha256(obj.read_bytes()).hexdigest() == obj.name
    assert not list(dl.cache.tmp.iterdir()), "a part file was left behind"


def test_plain_download_is_verified_and_recorded(tmp_path, server, standin_root):
    want = images(standin_root, 10)
    dl = make(tmp_path)
    res = dl.fetch_all([url(server, r) for r in want])
    for rel, sha in want.items():
        r = res[url(server, rel)]
        assert (r.status, r.sha256, r.attempts) == ("ok", sha, 1)
        assert dl.cache.object_path(sha).stat().st_size == r.bytes
    assert dl.ledger.get(url(server, next(iter(want)))).status == "ok"
    assert_cache_sound(dl)


@pytest.mark.parametrize(
    "actions, reason",
    [
        ([500, 503], "http"),
        (["truncate", "truncate"], "truncated"),
        (["reset", "reset"], "connection"),
        ([502, "truncate"], "truncated"),
    ],
)
def test_transient_faults_are_retried_until_ok(tmp_path, server, standin_root, actions, reason):
    rel, sha = next(iter(images(standin_root, 1).items()))
    server.faults.add(rel, actions)
    dl = make(tmp_path)
    res = dl.fetch(url(server, rel))
    assert (res.status, res.sha256, res.attempts) == ("ok", sha, len(actions) + 1)
    assert server.faults.pending() == 0
    assert_cache_sound(dl)


def test_stalled_response_times_out_and_is_retried(tmp_path, server, standin_root):
    rel, sha = next(iter(images(standin_root, 1).items()))
    server.faults.add(rel, ["stall:3"])
    dl = make(tmp_path, low_speed_time=1.0)
    res = dl.fetch(url(server, rel))
    assert (res.status, res.sha256, res.attempts) == ("ok", sha, 2)


def test_429_honours_retry_after(tmp_path, server, standin_root, monkeypatch):
    rel, _ = next(iter(images(standin_root, 1).items()))
    server.faults.add(rel, [("429", 7), ("429", 500)])
    clock = FrozenClock()
    stamps = stamp_requests(server, clock, monkeypatch)
    dl = make(tmp_path, clock=clock, retry_after_max=60)
    assert dl.fetch(url(server, rel)).status == "ok"
    # The server saw each retry exactly when its Retry-After ran out, capped by
    # retry_after_max: the frozen clock moves only while the downloader sleeps.
    times = [t for t, path in stamps if path == f"/gcp/{rel}"]
    assert [b - a for a, b in zip(times, times[1:], strict=False)] == pytest.approx([7.0, 60.0])
    assert clock.sleeps == pytest.approx([7.0, 60.0])


def test_exhausted_retries_fail_transiently_and_resume_next_run(tmp_path, server, standin_root):
    rel, sha = next(iter(images(standin_root, 1).items()))
    server.faults.add(rel, ["truncate"] * 3)
    dl = make(tmp_path, retries=2)
    res = dl.fetch(url(server, rel))
    assert res.status == "failed" and res.transient and "truncated" in res.reason
    assert_cache_sound(dl)
    assert not any(p.is_file() for p in dl.cache.objects.rglob("*"))
    dl.close()
    # The next run tries again and completes.
    dl = make(tmp_path, retries=2)
    res = dl.fetch(url(server, rel))
    assert (res.status, res.sha256) == ("ok", sha)


@pytest.mark.parametrize(
    "action, status", [(404, "missing"), (410, "missing"), ("corrupt", "corrupt")]
)
def test_permanent_failures_are_recorded_not_retried(
    tmp_path, server, standin_root, action, status
):
    rel, _ = next(iter(images(standin_root, 1).items()))
    server.faults.set_default(rel, action)
    dl = make(tmp_path)
    res = dl.fetch(url(server, rel))
    assert res.status == status and res.attempts == 1 and not res.transient
    assert_cache_sound(dl)
    assert not any(p.is_file() for p in dl.cache.objects.rglob("*"))
    seen = server.requests[f"/gcp/{rel}"]
    dl.close()
    again = make(tmp_path).fetch(url(server, rel))
    assert again.status == status
    assert server.requests[f"/gcp/{rel}"] == seen, "a permanent failure was re-requested"
    server.faults.clear()
    forced = make(tmp_path, retry_permanent=True).fetch(url(server, rel))
    assert forced.status == "ok"


def test_many_faults_at_once_leave_zero_corrupt_items(tmp_path, server, standin_root):
    want = images(standin_root)
    rels = list(want)
    plan = {
        0: [500],
        1: ["truncate"],
        2: ["reset"],
        3: [("429", 0)],
        4: [404],
        5: ["corrupt"],
        6: ["stall:2"],
        7: [503, 503, 503, 503, 503, 503],
    }
    for i, actions in plan.items():
        if actions in ([404], ["corrupt"]):
            server.faults.set_default(rels[i], actions[0])
        else:
            server.faults.add(rels[i], actions)
    dl = make(tmp_path, retries=3, low_speed_time=1.0, workers=8)
    res = dl.fetch_all([url(server, r) for r in rels])
    status = {r: res[url(server, r)].status for r in rels}
    assert status[rels[4]] == "missing" and status[rels[5]] == "corrupt"
    assert status[rels[7]] == "failed"
    assert all(status[r] == "ok" for i, r in enumerate(rels) if i not in (4, 5, 7))
    for r in rels:
        if status[r] == "ok":
            assert res[url(server, r)].sha256 == want[r]
    assert_cache_sound(dl)
    ledger = {r: dl.ledger.get(url(server, r)).status for r in rels}
    assert ledger == status


def test_token_goes_on_the_wire_but_not_in_the_ledger(tmp_path, standin_root):
    from standins.lila import LilaStandin

    token = "sv=2020&sig=s3cr3t-token"
    rel, sha = next(iter(images(standin_root, 1).items()))
    with LilaStandin(standin_root, token=token) as srv:
        dl = make(tmp_path)
        denied = dl.fetch(f"{srv.url}/gcp/{rel}")
        assert (denied.status, denied.reason) == ("failed", "http 403")
        dl.close()
        cred = Credential(frozenset({origin_of(srv.url)}), value=token, query=True)
        dl = make(tmp_path, credentials=Credentials([cred]))
        assert dl.fetch(f"{srv.url}/gcp/{rel}").sha256 == sha
        dl.close()
    raw = (tmp_path / "cache" / "t.sqlite").read_bytes()
    wal = tmp_path / "cache" / "t.sqlite-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert b"s3cr3t" not in raw


def test_structure_checks():
    assert check_structure("jpeg", b"\xff\xd8\xff\xe0", b"....\xff\xd9") is None
    assert "EOI" in check_structure("jpeg", b"\xff\xd8\xff\xe0", b"......")
    assert "SOI" in check_structure("jpeg", b"<html>", b"\xff\xd9")
    assert check_structure("png", b"\x89PNG\r\n\x1a\nxxxx", b"\0\0\0\0IEND\xaeB`\x82") is None
    assert "IEND" in check_structure("png", b"\x89PNG\r\n\x1a\nxxxx", b"abcdef")
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None


def test_gcs_md5_header_is_checked():
    import base64

    digest = hashlib.md5(b"abc").digest()
    header = f"crc32c=n03x6A==,md5={base64.b64encode(digest).decode()}"
    assert goog_md5(header) == digest.hex()
    assert goog_md5("crc32c=n03x6A==") is None and goog_md5(None) is None


def test_part_files_of_dead_runs_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    from stages.net.cache import HOST

    tmp = tmp_path / "cache" / "tmp"
    tmp.mkdir(parents=True)
    orphan = tmp / f"{dead}-1-{HOST}.part"
    mine = tmp / f"{os.getpid()}-1-{HOST}.part"
    # Another machine sharing the cache: its pids mean nothing here, so its parts stay.
    elsewhere = tmp / f"{dead}-1-otherhost.part"
    for part in (orphan, mine, elsewhere):
        part.write_bytes(b"half")
    make(tmp_path).close()
    assert not orphan.exists() and mine.exists() and elsewhere.exists()


def test_ctrl_c_stops_within_seconds_and_keeps_every_finished_result(tmp_path, server):
    import signal
    import sqlite3
    import subprocess
    import sys

    from tests.conftest import make_project

    proj = make_project(tmp_path / "repo", tmp_path / "cache", server.index_url)
    # Neither the rate limit nor the deadline may end the stalled transfers before the guard
    # below does: only Ctrl-C can stop this run in time.
    proj.set_conf("conf/fetch/default.yaml", "low_speed_time: 30.0", "low_speed_time: 900.0")
    proj.set_conf("conf/fetch/default.yaml", "attempt_timeout: 600.0", "attempt_timeout: 900.0")
    proj.compose()
    stalled = "/nacti-unzipped/part1/"
    server.faults.set_default(f"{stalled[1:]}*", "stall:900")  # woken when the server stops
    cmd = [sys.executable, "-m", "stages.fetch", "lila", "data/lila/fetch"]
    cmd += ["data/lila/metrics/fetch.json", "data/lila/plots/fetch.json"]
    proc = subprocess.Popen(
        cmd, cwd=proj.path, env=proj.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    objects = tmp_path / "cache" / "objects"

    def ready() -> bool:
        # Ctrl-C must land with finished downloads to keep and stalled ones in flight.
        assert proc.poll() is None, proc.communicate()
        done = sum(1 for p in objects.rglob("*") if p.is_file())
        return done >= 15 and any(stalled in path for path in list(server.requests))

    assert wait_until(ready, timeout=120), "the fetch never got going"
    proc.send_signal(signal.SIGINT)
    try:
        # A hang guard, far below the stalls' 900 s: a run that waited for its transfers
        # instead of stopping would be killed here.
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("Ctrl-C did not stop the fetch while transfers were stalled")
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    # Every verified download is in the ledger, and nothing half-written is left.
    db = sqlite3.connect(tmp_path / "cache" / "ledger-lila.sqlite")
    ok = {u for (u,) in db.execute("SELECT url FROM results WHERE status='ok'")}
    db.close()
    on_disk = {p.name for p in objects.rglob("*") if p.is_file()}
    assert len(ok) >= len(on_disk) - 2  # index + metadata are recorded too
    assert not list((tmp_path / "cache" / "tmp").glob("*.part"))
    assert not (proj.path / "data" / "lila" / "fetch").exists()
    assert len(ok) >= 15
    # The re-run fetches only what was not finished (and re-reads the index, as every run).
    server.faults.clear()
    seen = dict(server.requests)
    proj.run(*cmd)

    def requests(url):
        return server.requests[url[len(server.url) :]]

    assert {u for u in ok if requests(u) != seen[u[len(server.url) :]]} == {server.index_url}
    # Once packed and verified, the images leave the download cache (keep_cache: false);
    # the index and metadata stay, and so does every ledger record.
    from stages.core.store import Store

    packed = {r.sha256 for r in Store(proj.path / "data" / "lila" / "fetch").rows() if r.shard}
    left = {p.name for p in objects.rglob("*") if p.is_file()}
    assert len(packed) >= 15 and not packed & left and len(left) >= 2
    assert not list((tmp_path / "cache" / "released").iterdir())
