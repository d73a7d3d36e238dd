"""Kinetics clip lists end to end: the real yt-dlp and PyAV against the local stand-in."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from stages.core.errors import ConfigError, CorruptMetadata
from stages.core.executor import LocalExecutor
from stages.core.store import Row, Store, write_store
from stages.fetch import fetch
from stages.pipeline.compose import group_defaults, source_defaults
from stages.sources import load
from stages.sources.kinetics.clips import parse_clips
from stages.sources.kinetics.fetch import select
from standins.kinetics import KineticsStandin, generate
from standins.video import make_clip, read_index
from tests.families import extract_frames

SOURCE = load("kinetics")


@pytest.fixture(scope="module")
def kroot(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kinetics-standin")
    generate(root)
    return root


@pytest.fixture
def kserver(kroot):
    with KineticsStandin(root=kroot).start() as server:
        yield server


def kconf(server, **fetch_changes):
    """Return kinetics settings pointing at a stand-in."""
    f = {
        "annotations": f"{server.url}/kinetics/val.csv",
        "url_template": f"{server.url}/youtube/{{id}}.mp4",
        "archive_list": f"{server.url}/kinetics/k400_val_path.txt",
        **fetch_changes,
    }
    return source_defaults("kinetics", fetch=f, frames={"short_side": 64})


def run_fetch(cfg, out: Path, cache: Path, **over):
    fetch_cfg = group_defaults("fetch", retries=2, backoff=0.01, backoff_max=0.05, **over)
    return fetch(
        SOURCE, cfg, fetch_cfg, group_defaults("store"), out, cache, executor=LocalExecutor(2)
    )


def manifest(root: Path) -> dict:
    return json.loads((root / "_kinetics.json").read_text())


def frame_indices(store: Store) -> dict[str, list[int]]:
    """Return, per clip, the source frame index each extracted frame shows."""
    out: dict[str, list[tuple[int, int]]] = {}
    for row in store.rows():
        if row.status == "ok":
            idx = read_index(simplejpeg.decode_jpeg(store.read(row)))
            out.setdefault(row.meta["clip"], []).append((row.meta["frame"], idx))
    return {k: [i for _, i in sorted(v)] for k, v in out.items()}


def test_youtube_sections_give_exactly_the_window(kserver, kroot, tmp_path):
    rows, metrics = run_fetch(kconf(kserver), tmp_path / "fetch", tmp_path / "cache")
    assert metrics["ok"] == 8 and metrics["missing"] == 1
    assert metrics["reasons"] == {"missing: unavailable: HTTP 404": 1}
    assert metrics["availability"]["missing"]["arm wrestling"] == 1
    frows, fm = extract_frames(
        Store(tmp_path / "fetch"), SOURCE, kconf(kserver), tmp_path / "frames", 1 << 20, workers=2
    )
    assert fm["clips_ok"] == 8 and fm["clips_failed"] == 0
    fps = manifest(kroot)["args"]["fps"]
    got = frame_indices(Store(tmp_path / "frames"))
    # Every frame records its payload's digest (diffs see a re-decoded frame change).
    for frame, data in Store(tmp_path / "frames").iter_payloads():
        assert frame.sha256 == hashlib.sha256(data).hexdigest()
    for row in rows:
        if row.status != "ok":
            continue
        start, end = row.meta["time_start"], row.meta["time_end"]
        # Copy-mode cuts start at the keyframe before time_start (the windows are mid-GOP):
        # the recorded window keeps exactly the frames of [start, end).
        first = round(start * fps)
        assert got[row.item_id] == list(range(first, first + round((end - start) * fps)))


def test_failures_are_classified_and_retried(kserver, tmp_path):
    cfg = kconf(kserver)
    ids = sorted(i for i, v in manifest(kserver.root)["videos"].items() if v["has_video"])
    kserver.faults.add(f"youtube/{ids[0]}.mp4", [500])  # a server error, then success
    kserver.faults.set_default(f"youtube/{ids[1]}.mp4", 503)  # never recovers
    rows, metrics = run_fetch(cfg, tmp_path / "fetch", tmp_path / "cache")
    by_id = {r.source_id: r for r in rows}
    assert by_id[ids[0]].status == "ok"
    assert by_id[ids[1]].status == "failed" and by_id[ids[1]].reason == "HTTP 503"
    assert metrics["availability"]["failed"][by_id[ids[1]].labels[0]] == 1
    # The next run fetches only what is missing: the 404 is permanent, the 503 is retried.
    kserver.faults.clear()
    before = dict(kserver.requests)
    rows, metrics = run_fetch(cfg, tmp_path / "fetch2", tmp_path / "cache")
    assert metrics["ok"] == 8 and metrics["failed"] == 0
    fetched = {p for p, n in kserver.requests.items() if n > before.get(p, 0)}
    assert fetched == {f"/youtube/{ids[1]}.mp4", "/kinetics/val.csv"}


def test_only_the_section_is_transferred(tmp_path):
    root = tmp_path / "root"
    video = make_clip(
        root / "youtube" / "BigVideo_01.mp4",
        seconds=90,
        fps=10,
        width=320,
        height=240,
        gop=25,
        noise=255,
        crf=12,
        preset="ultrafast",
    )
    csv = root / "kinetics" / "val.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text("label,youtube_id,time_start,time_end,split\nx,BigVideo_01,61,63,val\n")
    with KineticsStandin(root=root).start() as server:
        cfg = kconf(server)
        cfg.classes = ["x"]
        rows, metrics = run_fetch(cfg, tmp_path / "fetch", tmp_path / "cache")
        assert metrics["ok"] == 1
        sent = server.bytes_sent["/youtube/BigVideo_01.mp4"]
    size = video.stat().st_size
    assert rows[0].bytes < size / 20
    # What the server wrote includes what loopback socket buffers took in before the client
    # hung up (a few MB per connection); the rest of the video never left the server.
    assert sent < size / 3, (sent, size)


CSV = (
    "label,youtube_id,time_start,time_end,split,is_cc\n"
    '"playing cards, poker",abcdefghijk,10,20,val,1\n'
    "arm wrestling,ABCDEFGHIJK,0,10,val,0\n"
    "arm wrestling,ABCDEFGHIJ_,5,15,train,0\n"
)


def test_csv_columns_by_name_quoted_labels_and_test_split():
    clips, labelled, dups = parse_clips(CSV)
    assert labelled and dups == 0
    assert clips[0].label == "playing cards, poker" and clips[0].is_cc == "1"
    assert clips[0].clip_id == "abcdefghijk_000010_000020"
    cfg = source_defaults("kinetics", classes=["Playing Cards, Poker", "arm wrestling"])
    chosen, labels, stats = select(cfg, clips, labelled)
    assert [c.clip_id for c in chosen] == ["ABCDEFGHIJK_000000_000010", "abcdefghijk_000010_000020"]
    assert labels["abcdefghijk_000010_000020"] == ["Playing Cards, Poker"]
    # A test-split list has no label column: one unlabelled pool, the cap still applies.
    test_csv = "youtube_id,time_start,time_end,split\nabcdefghijk,1,3,test\nABCDEFGHIJK,2,4,test\n"
    clips, labelled, _ = parse_clips(test_csv)
    assert not labelled
    cfg = source_defaults("kinetics", fetch={"split": "test", "cap": 1})
    chosen, labels, stats = select(cfg, clips, labelled)
    assert len(chosen) == 1 and labels == {}


@pytest.mark.parametrize(
    "text, message",
    [
        ("label,youtube_id,time_start\nx,abc,1\n", "lacks column"),
        ("label,youtube_id,time_start,time_end\nx,a b,1,2\n", "bad youtube_id"),
        ("label,youtube_id,time_start,time_end\nx,abc,5,2\n", "time_end <= time_start"),
        ("label,youtube_id,time_start,time_end\nx,abc,1,2,9\n", "more fields"),
        ("label,youtube_id,time_start,time_end\nx,abc,one,2\n", "not a number"),
    ],
)
def test_malformed_csv_is_one_clear_error(text, message):
    with pytest.raises(CorruptMetadata, match=message):
        parse_clips(text)


def test_unknown_class_names_fail_with_close_matches():
    clips, labelled, _ = parse_clips(CSV)
    cfg = source_defaults("kinetics", classes=["arm wresling"])
    with pytest.raises(ConfigError, match="arm wrestling"):
        select(cfg, clips, labelled)


def test_archives_keep_only_selected_members_and_are_not_refetched(kserver, kroot, tmp_path):
    cfg = kconf(kserver, mode="archives", caps={"arm wrestling": 2})
    # Kept clips (keep_cache) are what lets a later run skip their archives.
    rows, metrics = run_fetch(cfg, tmp_path / "fetch", tmp_path / "cache", keep_cache=True)
    ok = sorted(r.item_id for r in rows if r.status == "ok")
    assert metrics["selection"]["archives"]["fetched"] == 2
    # Every selected clip with a video is in some archive; unselected members are not kept.
    members = set()
    for tgz in sorted((kroot / "kinetics" / "val").glob("*.tar.gz")):
        with tarfile.open(tgz) as tar:
            members |= {Path(n).stem for n in tar.getnames()}
    assert set(ok) < members
    store = Store(tmp_path / "fetch")
    assert {r.item_id for r in store.rows() if r.shard} == set(ok)
    extract_frames(store, SOURCE, cfg, tmp_path / "frames", 1 << 20, workers=1)
    fps = manifest(kroot)["args"]["fps"]
    for clip, idx in frame_indices(Store(tmp_path / "frames")).items():
        start = int(clip.split("_")[-2])
        assert idx[0] == start * fps and idx == list(range(idx[0], idx[0] + len(idx)))
    # A re-run finds every selected member in the cache: no archive is downloaded again.
    before = {p: n for p, n in kserver.requests.items() if p.endswith(".tar.gz")}
    rows2, metrics2 = run_fetch(cfg, tmp_path / "fetch2", tmp_path / "cache")
    after = {p: n for p, n in kserver.requests.items() if p.endswith(".tar.gz")}
    assert after == before and metrics2["selection"]["archives"]["skipped_complete"] == 2
    assert sorted(r.item_id for r in rows2 if r.status == "ok") == ok


def test_an_old_caches_member_rows_are_ignored_and_listings_rebuilt(kserver, tmp_path):
    from stages.net.ledger import Ledger, Result

    cfg = kconf(kserver, mode="archives", caps={"arm wrestling": 2})
    rows, _ = run_fetch(cfg, tmp_path / "fetch", tmp_path / "cache", keep_cache=True)
    ok = sorted(r.item_id for r in rows if r.status == "ok")
    # A cache from before the listings store: member lists as `<archive>#members` ledger
    # rows (here naming an object that is not there), and no listings.
    for path in (tmp_path / "cache" / "listings").iterdir():
        path.unlink()
    ledger = Ledger(tmp_path / "cache" / "ledger-kinetics.sqlite")
    archives = sorted({r.url.split("#")[0] for r in rows if r.status == "ok"})
    ledger.put(*(Result(f"{url}#members", "ok", "", "0" * 64, 2) for url in archives))
    ledger.close()
    # The lists are read from the archives again, and kept in the listings for the next run.
    rows2, m2 = run_fetch(cfg, tmp_path / "fetch2", tmp_path / "cache", keep_cache=True)
    assert m2["selection"]["archives"]["fetched"] == 2
    assert sorted(r.item_id for r in rows2 if r.status == "ok") == ok
    rows3, m3 = run_fetch(cfg, tmp_path / "fetch3", tmp_path / "cache")
    assert m3["selection"]["archives"]["skipped_complete"] == 2
    assert [(r.item_id, r.sha256) for r in rows3] == [(r.item_id, r.sha256) for r in rows]


def test_bad_videos_fail_alone(tmp_path):
    good = make_clip(tmp_path / "good.mp4", seconds=1, fps=10, width=64, height=48)
    data = good.read_bytes()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.mp4").write_bytes(b"\x00" * 4096)
    rows = [
        Row(item_id=n, source="kinetics", source_id=n, url=f"file:{n}.mp4", labels=["x"])
        for n in ("empty", "garbage", "good", "truncated")
    ]
    write_store(
        tmp_path / "in",
        rows,
        lambda r: tmp_path / f"{r.item_id}.mp4",
        1 << 20,
        executor=LocalExecutor(2),
    )
    cfg = source_defaults("kinetics", classes=["x"])
    out, m = extract_frames(Store(tmp_path / "in"), SOURCE, cfg, tmp_path / "out", 1 << 20, 2)
    by_id = {r.item_id: r for r in out if r.status != "ok"}
    assert set(by_id) == {"empty", "garbage", "truncated"}
    assert by_id["empty"].reason == "empty video (0 bytes)"
    assert all(r.reason for r in by_id.values())
    assert m["clips_ok"] == 1 and m["frames"] == 10
    frames = [r for r in out if r.status == "ok"]
    assert (frames[0].width, frames[0].height) == (342, 256)
    img = simplejpeg.decode_jpeg(Store(tmp_path / "out").read(frames[3]))
    assert img.shape == (256, 342, 3) and read_index(img) == 3
    assert np.asarray(img).dtype == np.uint8


def test_clean_export_and_frame_folders(kserver, tmp_path):
    from stages.core.executor import LocalExecutor
    from stages.core.store import rebase, write_manifest
    from stages.export_folders import export_folders
    from stages.families.export import ClipExporter
    from tests.families import clean

    cfg = kconf(kserver, caps={"arm wrestling": 2, "bungee jumping": 1, "playing cards, poker": 1})
    run_fetch(cfg, tmp_path / "fetch", tmp_path / "cache")
    extract_frames(Store(tmp_path / "fetch"), SOURCE, cfg, tmp_path / "frames", 1 << 20, 2)
    # 20-frame clips: a clean threshold above that drops every clip, one below keeps them.
    strict = group_defaults("clean", min_frames=21)
    kept, _, m, _ = clean(Store(tmp_path / "frames"), SOURCE, cfg, strict, group_defaults("split"))
    assert kept == [] and m["dropped"]["clip_too_short"] == 3
    kept, _, m, _ = clean(
        Store(tmp_path / "frames"), SOURCE, cfg, group_defaults("clean"), group_defaults("split")
    )
    assert m["clips_out"] == 3 and m["dropped"] == {"clip_missing": 1}
    (tmp_path / "clean").mkdir()
    write_manifest(tmp_path / "clean", rebase(kept, tmp_path / "frames", tmp_path / "clean"))
    exp = group_defaults("export", height=32, width=48, frames=4, clips_per_shard=2)
    clean_store = Store(tmp_path / "clean")
    em = ClipExporter().export(
        clean_store.rows(), clean_store, cfg.classes, exp, tmp_path / "npz", LocalExecutor(2)
    )
    assert em["items"] == 3 and em["shards"] == 2
    with np.load(tmp_path / "npz" / "shard-00000.npz", allow_pickle=False) as z:
        assert z["X"].shape == (2, 4, 32, 48, 3) and z["X"].dtype == np.uint8
        assert list(z["classes"]) == cfg.classes and len(z["ids"]) == len(z["y"]) == 2
    n = export_folders(Store(tmp_path / "clean"), tmp_path / "mm", "mmaction")
    assert n == 60
    clip_dirs = sorted(p for p in (tmp_path / "mm").glob("*/*") if p.is_dir())
    assert len(clip_dirs) == 3
    names = sorted(p.name for p in clip_dirs[0].iterdir())
    assert names[0] == "img_00001.jpg" and names[-1] == "img_00020.jpg"
    export_folders(Store(tmp_path / "clean"), tmp_path / "seed", "frames")
    assert (tmp_path / "seed" / "arm_wrestling").is_dir()
    assert sorted((tmp_path / "seed").glob("*/*/image_00001.jpg"))


def test_truncated_and_stalled_transfers_are_transient(kserver, tmp_path):
    # One clip of a class without missing videos.
    cfg = kconf(kserver, caps={"arm wrestling": 0, "bungee jumping": 1, "playing cards, poker": 0})
    clips, labelled, _ = parse_clips((kserver.root / "kinetics" / "val.csv").read_text())
    (target,) = select(cfg, clips, labelled)[0]
    assert manifest(kserver.root)["videos"][target.youtube_id]["has_video"]
    path = f"youtube/{target.youtube_id}.mp4"
    # Every request for the video is cut short, then every one stalls: never a usable clip.
    kserver.faults.set_default(path, "truncate")
    fetch_cfg = group_defaults("fetch", retries=1, backoff=0.01, attempt_timeout=3.0)
    rows, m = fetch(
        SOURCE,
        cfg,
        fetch_cfg,
        group_defaults("store"),
        tmp_path / "a",
        tmp_path / "c",
        executor=LocalExecutor(2),
    )
    assert m["failed"] == 1 and m["ok"] == 0, m["reasons"]
    kserver.faults.set_default(path, "stall:60")
    rows, m = fetch(
        SOURCE,
        cfg,
        fetch_cfg,
        group_defaults("store"),
        tmp_path / "b",
        tmp_path / "c",
        executor=LocalExecutor(2),
    )
    assert m["reasons"] == {"failed: attempt deadline exceeded": 1}
    assert not list((tmp_path / "c" / "tmp").iterdir())  # no work directory left behind
    kserver.faults.clear()
    rows, m = fetch(
        SOURCE,
        cfg,
        fetch_cfg,
        group_defaults("store"),
        tmp_path / "d",
        tmp_path / "c",
        executor=LocalExecutor(2),
    )
    assert m["ok"] == 1


@pytest.mark.parametrize(
    "fps, num_frames, window, expected",
    [
        (None, None, None, list(range(20))),
        (5.0, None, None, list(range(0, 20, 2))),  # every other frame of a 10 fps clip
        (None, 4, None, [2, 7, 12, 17]),  # centres of 4 equal segments
        (None, None, (0.5, 1.2), list(range(5, 12))),
        (5.0, 2, (0.5, 1.5), [7, 11]),  # 5, 7, 9, 11, 13 resampled; 2 of those 5
    ],
)
def test_rate_sampling_and_window_pick_the_right_source_frames(
    tmp_path, fps, num_frames, window, expected
):
    from stages.formats.video import FrameSpec, extract

    clip = make_clip(tmp_path / "c.mp4", seconds=2, fps=10, width=96, height=64, gop=7)
    conf = source_defaults("kinetics").frames
    spec = FrameSpec(None, fps, num_frames, conf.quality, conf.interpolation.value)
    res = extract(str(clip), spec, window, hold_bytes=1 << 26)
    got = [read_index(simplejpeg.decode_jpeg(j)) for j in res.jpegs]
    assert got == expected
    assert (res.width, res.height) == (96, 64)
    assert res.times == sorted(res.times) and res.times[0] >= 0


def test_a_gzip_bomb_is_one_archive_failure(kserver, tmp_path):
    from standins.http import Handler, Standin

    info = tarfile.TarInfo("zeros.bin")
    info.size = 64 << 20  # 64 MiB of zeros: about 64 KiB gzipped
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    bomb = buf.getvalue()

    class BombHandler(Handler):
        def route(self, path, query, head):
            self.serve(bomb, "application/gzip", head)

    class Bombs(Standin):
        handler = BombHandler

    listing = tmp_path / "paths.txt"
    with Bombs() as bombs:
        listing.write_text(f"{bombs.url}/bomb.tar.gz\n" + kserver.path_list("val"))
        cfg = kconf(kserver, mode="archives", archive_list=str(listing))
        rows, m = run_fetch(cfg, tmp_path / "fetch", tmp_path / "cache")
    arch = m["selection"]["archives"]
    assert arch["failed"] == 1 and arch["fetched"] == 3  # downloaded, then refused
    (reason,) = arch["reasons"]
    assert reason.startswith("unreadable archive: unpacks to more than")
    # The clips the other archives hold are kept; one that may be in the bomb is retried later.
    assert m["ok"] == 8 and m["failed"] == 1


def test_a_decoder_process_that_dies_costs_no_clip(tmp_path, caplog):
    import os
    import signal
    import threading
    import time

    clips = [
        make_clip(tmp_path / f"{i}.mp4", seconds=20, fps=30, width=320, height=240, seed=i)
        for i in range(3)
    ]
    rows = [
        Row(item_id=p.stem, source="kinetics", source_id=p.stem, url="file:x.mp4", labels=["x"])
        for p in clips
    ]
    write_store(
        tmp_path / "in",
        rows,
        lambda r: tmp_path / f"{r.item_id}.mp4",
        1 << 30,
        executor=LocalExecutor(2),
    )
    cfg = source_defaults("kinetics", classes=["x"], frames={"short_side": None})
    me, own = os.getpid(), Path("/proc/self/cmdline").read_bytes()
    killed = []

    def kill_a_worker():  # as the OOM killer would: SIGKILL a pool worker mid-clip
        deadline = time.monotonic() + 30
        while not killed and time.monotonic() < deadline:
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    ppid = int(stat.read_bytes().rsplit(b")", 1)[1].split()[1])
                    forked = (stat.parent / "cmdline").read_bytes() == own  # not a forkserver
                except (OSError, ValueError, IndexError):
                    continue
                if ppid == me and forked:
                    time.sleep(0.3)
                    os.kill(int(stat.parent.name), signal.SIGKILL)
                    killed.append(stat.parent.name)
                    break
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    out, m = extract_frames(Store(tmp_path / "in"), SOURCE, cfg, tmp_path / "out", 1 << 30, 1)
    killer.join()
    assert killed, "no worker was seen"
    assert "a worker process died" in caplog.text  # the pool broke, and recovered
    assert m["clips_ok"] == 3 and m["frames"] == 3 * 600, m["reasons"]
    assert not (tmp_path / "out" / ".spool").exists()
