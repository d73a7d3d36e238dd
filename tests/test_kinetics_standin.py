"""Tests for the Kinetics stand-in: generated videos, CSVs, clip archives and its HTTP server."""

from __future__ import annotations

import csv
import http.client
import io
import signal
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlsplit

import av
import pytest

from standins.kinetics import CSV_COLUMNS, TEST_COLUMNS, KineticsStandin, generate, is_generated
from standins.video import read_index

SMALL = {"classes": {"arm wrestling": 2, "playing cards, poker": 1}, "seconds": 5.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinetics")
    return root, generate(root, **SMALL)


@pytest.fixture(scope="module")
def server(data):
    with KineticsStandin(data[0]) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _clear(request):
    yield
    if "server" in request.fixturenames:
        request.getfixturevalue("server").faults.clear()


def get(url: str, headers=None, timeout=5):
    """GET with urllib; return (status, headers, body) for errors too."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except HTTPError as err:
        return err.code, err.headers, err.read()


def available(manifest: dict) -> list[str]:
    """Ids of the split's videos that exist."""
    split = manifest["split"]
    return [v for v, e in manifest["videos"].items() if e["split"] == split and e["has_video"]]


def frames(data: bytes) -> list[tuple[int, bool]]:
    """Decode an mp4; return (shown index, is keyframe) per frame in display order."""
    with av.open(io.BytesIO(data)) as container:
        return [
            (read_index(f.to_ndarray(format="rgb24")), bool(f.key_frame))
            for f in container.decode(video=0)
        ]


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_generation_is_deterministic(tmp_path, data):
    again = generate(tmp_path, **SMALL)
    assert again == data[1]
    assert files(tmp_path) == files(data[0])
    assert is_generated(tmp_path, **SMALL)
    assert not is_generated(tmp_path, **SMALL, seed=1)


def test_csvs(data):
    root, manifest = data
    text = (root / "kinetics/val.csv").read_text()
    assert '"playing cards, poker"' in text  # a label with a comma must be quoted
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {r["label"] for r in rows} == {"arm wrestling", "playing cards, poker"}
    assert len(rows) == 3 + 1  # three downloadable videos plus one gone from the host
    for row in rows:
        entry = manifest["videos"][row["youtube_id"]]
        assert (row["label"], row["split"]) == (entry["label"], "val")
        assert (int(row["time_start"]), int(row["time_end"])) == (entry["start"], entry["end"])
        assert row["is_cc"] in ("0", "1")
    assert sum(not manifest["videos"][r["youtube_id"]]["has_video"] for r in rows) == 1
    test_rows = list(csv.DictReader(io.StringIO((root / "kinetics/test.csv").read_text())))
    assert tuple(test_rows[0]) == TEST_COLUMNS and len(test_rows) == 2
    assert {r["split"] for r in test_rows} == {"test"}
    for row in test_rows:
        assert (root / "youtube" / f"{row['youtube_id']}.mp4").is_file()


def test_range_request_counts_only_its_bytes(data, server):
    root, manifest = data
    vid = available(manifest)[0]
    path, body = f"/youtube/{vid}.mp4", (root / f"youtube/{vid}.mp4").read_bytes()
    before = server.bytes_sent[path]
    status, headers, got = get(server.video_url(vid), {"Range": "bytes=100-1099"})
    assert status == 206 and got == body[100:1100]
    assert headers["Content-Range"] == f"bytes 100-1099/{len(body)}"
    assert headers["Content-Type"] == "video/mp4"
    assert server.bytes_sent[path] - before == 1000
    status, _, got = get(server.video_url(vid))
    assert status == 200 and got == body
    assert server.bytes_sent[path] - before == 1000 + len(body)


def test_missing_video_and_bad_paths_404(data, server):
    gone = next(v for v, e in data[1]["videos"].items() if not e["has_video"])
    assert get(server.video_url(gone))[0] == 404
    assert server.bytes_sent[f"/youtube/{gone}.mp4"] == 0
    for bad in ("/_kinetics.json", "/kinetics/../_kinetics.json", "/kinetics/%2e%2e/x.csv"):
        conn = http.client.HTTPConnection(*urlsplit(server.url).netloc.split(":"), timeout=5)
        conn.request("GET", bad)
        assert conn.getresponse().status == 404, bad
        conn.close()


def test_faults(data, server):
    vid = available(data[1])[0]
    server.faults.add("youtube/*.mp4", [500, "truncate"])
    assert get(server.video_url(vid))[0] == 500
    with pytest.raises(http.client.IncompleteRead):
        get(server.video_url(vid))
    assert get(server.video_url(vid))[2] == (data[0] / f"youtube/{vid}.mp4").read_bytes()


def test_path_list_points_at_this_server(data, server):
    root, manifest = data
    status, headers, body = get(server.kinetics_url("kinetics/k400_val_path.txt"))
    assert status == 200
    urls = body.decode().splitlines()
    assert urls == [f"{server.url}/{rel}" for rel in manifest["archives"]]
    status, headers, got = get(urls[1])
    assert status == 200 and headers["Content-Type"] == "application/gzip"
    assert got == (root / manifest["archives"][1]).read_bytes()
    assert get(server.kinetics_url("kinetics/k400_train_path.txt"))[0] == 404


def test_archive_members_are_the_trimmed_windows(data):
    root, manifest = data
    seen = set()
    for rel in manifest["archives"]:
        with tarfile.open(root / rel) as tar:
            names = tar.getnames()
            assert names == sorted(names)
            for info in tar.getmembers():
                assert (info.mtime, info.uid, info.gid) == (0, 0, 0)
                vid = info.name[:11]
                if info.name in manifest["extra_members"].get(rel, []):
                    assert vid not in manifest["videos"]
                    continue
                entry = manifest["videos"][vid]
                assert info.name == f"{vid}_{entry['start']:06d}_{entry['end']:06d}.mp4"
                assert entry["archive"] == rel and entry["member"] == info.name
                shown = frames(tar.extractfile(info).read())
                assert shown[0][0] == entry["start"] * entry["fps"]
                assert len(shown) == (entry["end"] - entry["start"]) * entry["fps"]
                seen.add(vid)
    assert seen == set(available(manifest))
    assert manifest["extra_members"][manifest["archives"][0]]


def test_window_starts_mid_gop(data):
    root, manifest = data
    gop = manifest["args"]["gop"]
    for vid in available(manifest):
        entry = manifest["videos"][vid]
        shown = frames((root / entry["video"]).read_bytes())
        assert [i for i, _ in shown] == list(range(entry["frames"]))
        keys = [i for i, key in shown if key]
        assert keys == entry["keyframes"] == list(range(0, entry["frames"], gop))
        assert entry["start"] * entry["fps"] not in keys


def test_cli_serve(tmp_path):
    cmd = [sys.executable, "-m", "standins.kinetics", "serve", "--root", str(tmp_path)]
    with subprocess.Popen(
        [*cmd, "--port", "0", "--generate", "--seed", "3"],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            line = proc.stdout.readline()
            assert line.startswith("Kinetics stand-in serving http://127.0.0.1:")
            url = line.split()[-1]
            assert is_generated(tmp_path, seed=3)
            status, _, body = get(f"{url}/kinetics/k400_val_path.txt")
            assert status == 200 and body.decode().startswith(f"{url}/kinetics/val/part_0")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(5) == 0
