"""Tests for the LILA stand-in: generated data, blob-store protocol and fault injection."""

import csv
import hashlib
import http.client
import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlsplit

import pytest
from PIL import Image

from standins.http import FaultPlan
from standins.lila import (
    INDEX_COLUMNS,
    LilaStandin,
    generate_dataset,
    is_generated,
)

N_IMAGES = 12
TOKEN = "sv=2020&sig=abc"
OPEN_CONNS: list[http.client.HTTPConnection] = []


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("lila")
    return root, generate_dataset(root, n_images=N_IMAGES, box_fraction=0.5)


@pytest.fixture(scope="module")
def meta(dataset):
    root, summary = dataset
    with zipfile.ZipFile(root / summary["metadata_path"]) as zf:
        return json.loads(zf.read(zf.namelist()[0]), object_pairs_hook=dict)


@pytest.fixture(scope="module")
def server(dataset):
    with LilaStandin(dataset[0]) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _cleanup(request):
    yield
    while OPEN_CONNS:
        OPEN_CONNS.pop().close()
    if "server" in request.fixturenames:
        request.getfixturevalue("server").faults.clear()


@pytest.fixture(scope="module")
def image_rel(dataset):
    """Return the root-relative path of the first image."""
    return next(p for p in dataset[1]["files"] if p.endswith(".jpg"))


def get(url, headers=None, timeout=5):
    """GET with urllib; return (status, headers, body) for errors too."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except HTTPError as err:
        return err.code, err.headers, err.read()


def raw(server, path, method="GET", headers=None, timeout=5):
    """Send one request with http.client (no path normalisation); return the open response."""
    conn = http.client.HTTPConnection(urlsplit(server.url).hostname, urlsplit(server.url).port)
    conn.timeout = timeout
    conn.request(method, path, headers=headers or {})
    OPEN_CONNS.append(conn)
    return conn.getresponse()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Generation


def test_generation_is_deterministic(dataset, tmp_path):
    root, summary = dataset
    again = generate_dataset(tmp_path / "a", n_images=N_IMAGES, box_fraction=0.5)
    assert again == summary
    for rel, digest in summary["files"].items():
        assert sha((root / rel).read_bytes()) == digest == sha((tmp_path / "a" / rel).read_bytes())
    other = generate_dataset(tmp_path / "b", n_images=N_IMAGES, box_fraction=0.5, seed=1)
    assert set(other["files"].values()).isdisjoint(summary["files"].values())


def test_summary(dataset, meta):
    root, summary = dataset
    assert summary["name"] == "NACTI-demo" and summary["slug"] == "nacti"
    assert summary["metadata_path"] == "nacti/nacti_metadata.1.14.json.zip"
    assert summary["image_base_relative"] == "nacti-unzipped"
    assert summary["n_images"] == N_IMAGES
    images = [p for p in summary["files"] if p.endswith(".jpg")]
    assert len(images) == N_IMAGES
    assert summary["bytes"] == sum((root / p).stat().st_size for p in images)
    assert sum(summary["class_counts"].values()) == len(meta["annotations"])
    assert min(summary["class_counts"].values()) >= 1  # small sets still show every class
    assert len(set(summary["class_counts"].values())) > 1  # uneven frequencies
    entries = json.loads((root / "_datasets.json").read_text())
    assert [e["slug"] for e in entries] == ["nacti"]


def test_images_decode_at_metadata_size(dataset, meta):
    root, summary = dataset
    for image in meta["images"]:
        path = root / summary["image_base_relative"] / image["file_name"]
        data = path.read_bytes()
        assert 15_000 < len(data) < 80_000
        assert data.endswith(b"\xff\xd9")
        with Image.open(path) as im:
            assert im.format == "JPEG"
            assert im.size == (image["width"], image["height"])
            im.load()


def test_metadata_zip_structure(dataset, meta):
    root, summary = dataset
    with zipfile.ZipFile(root / summary["metadata_path"]) as zf:
        assert zf.namelist() == ["nacti_metadata.1.14.json"]
        info = zf.infolist()[0]
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert zf.read(info).startswith(b'{\n "images": [\n')  # indent=1, NACTI key order
    assert list(meta) == ["images", "info", "categories", "annotations"]
    assert meta["info"]["version"] == "1.14"

    cats = meta["categories"]
    assert cats[0] == {
        "id": 0,
        "name": "empty",
        "species": "",
        "genus": "",
        "family": "",
        "ord": "",
        "class": "",
        "common name": "empty",
    }
    deer = next(c for c in cats if c["common name"] == "mule deer")
    assert deer["name"] == "odocoileus hemionus" and deer["genus"] == "odocoileus"
    assert deer["family"] == "cervidae" and deer["class"] == "mammalia"
    assert [c["id"] for c in cats] == list(range(len(cats))) and len(cats) == 8

    sizes = {}
    for image in meta["images"]:
        assert isinstance(image["id"], str) and "corrupt" not in image
        assert image["file_name"] == image["id"] + ".jpg"
        assert "\\" not in image["file_name"]
        assert image["file_name"].startswith("part0/sub00")
        assert isinstance(image["location"], str)
        time.strptime(image["datetime"], "%Y-%m-%d %H:%M:%S")
        sizes[image["id"]] = (image["width"], image["height"])
    assert any("seq_id" in i for i in meta["images"])
    assert any("seq_id" not in i for i in meta["images"])

    anns = meta["annotations"]
    assert {a["image_id"] for a in anns} == set(sizes)
    assert len(anns) > len(sizes)  # at least one multi-label image
    assert len({a["id"] for a in anns}) == len(anns)
    boxes = [(a["bbox"], sizes[a["image_id"]]) for a in anns if "bbox" in a]
    assert all(a["category_id"] != 0 for a in anns if "bbox" in a)
    assert len(boxes) >= 4
    outside = [
        b for b, (w, h) in boxes if b[0] < 0 or b[1] < 0 or b[0] + b[2] > w or b[1] + b[3] > h
    ]
    assert len(outside) >= 2
    assert sum(1 for b, _ in boxes if b[2] < 1 or b[3] < 1) == 1


def test_registry_pretty_and_is_generated(tmp_path):
    first = generate_dataset(tmp_path, n_images=3, slug="a", name="A", pretty=False)
    generate_dataset(
        tmp_path, n_images=2, slug="b", name="B", classes=[("elk", "Cervus canadensis")]
    )
    generate_dataset(
        tmp_path, n_images=3, slug="a", name="A", pretty=False
    )  # replaces, not appends
    entries = json.loads((tmp_path / "_datasets.json").read_text())
    assert [e["slug"] for e in entries] == ["a", "b"]
    with zipfile.ZipFile(tmp_path / first["metadata_path"]) as zf:
        text = zf.read("a_metadata.1.14.json")
    assert b"\n" not in text
    with zipfile.ZipFile(tmp_path / "b/b_metadata.1.14.json.zip") as zf:
        cats = json.loads(zf.read("b_metadata.1.14.json"))["categories"]
    assert [c["name"] for c in cats] == ["empty", "cervus canadensis"]
    assert is_generated(tmp_path, n_images=3, slug="a", name="A", pretty=False)
    assert not is_generated(tmp_path, n_images=4, slug="a", name="A", pretty=False)
    (tmp_path / next(iter(first["files"]))).unlink()
    assert not is_generated(tmp_path, n_images=3, slug="a", name="A", pretty=False)

    with LilaStandin(tmp_path) as srv:
        rows = list(csv.DictReader(io.StringIO(get(srv.index_url)[2].decode())))
        assert [r["name"] for r in rows] == ["A", "B", "Caltech Camera Traps"]
    with LilaStandin(tmp_path, datasets=[first]) as srv:
        rows = list(csv.DictReader(io.StringIO(get(srv.index_url)[2].decode())))
        assert [r["name"] for r in rows] == ["A", "Caltech Camera Traps"]


# ---------------------------------------------------------------------------------------------
# Protocol


def test_index_csv_points_at_server(server, dataset, meta):
    root, summary = dataset
    status, headers, body = get(server.index_url)
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(body.decode()))
    assert reader.fieldnames == INDEX_COLUMNS
    rows = {r["name"]: r for r in reader}
    assert set(rows) == {"NACTI-demo", "Caltech Camera Traps"}
    row = rows["NACTI-demo"]
    assert row["short_name"] == "nacti"
    assert row["image_base_url_relative"] == "nacti-unzipped"
    assert row["metadata_url_relative"] == summary["metadata_path"]
    image = meta["images"][-1]
    for cloud in ("gcp", "aws", "azure"):
        base = row[f"image_base_url_{cloud}"]
        assert base == f"{server.url}/{cloud}/nacti-unzipped"  # no trailing slash, like LILA
        status, headers, data = get(base + "/" + image["file_name"])
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        assert sha(data) == summary["files"]["nacti-unzipped/" + image["file_name"]]
        status, headers, data = get(row[f"metadata_url_{cloud}"])
        assert status == 200 and headers["Content-Type"] == "application/zip"
        assert data == (root / summary["metadata_path"]).read_bytes()
    assert "127.0.0.1" not in rows["Caltech Camera Traps"]["image_base_url_gcp"]


def test_headers_head_and_keep_alive(server, dataset, image_rel):
    data = (dataset[0] / image_rel).read_bytes()
    conn = http.client.HTTPConnection(urlsplit(server.url).hostname, urlsplit(server.url).port)
    for method in ("HEAD", "GET", "GET"):  # one connection: HTTP/1.1 keep-alive
        conn.request(method, f"/aws/{image_rel}")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200 and resp.version == 11
        assert resp.headers["Content-Length"] == str(len(data))
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert resp.headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        assert body == (b"" if method == "HEAD" else data)
    conn.close()
    status, headers, _ = get(f"{server.url}/gcp/{image_rel}?ignored=1")
    assert status == 200 and headers["x-goog-hash"].startswith("md5=")


def test_request_counter(server, image_rel):
    before = server.requests[f"/azure/{image_rel}"]
    get(f"{server.url}/azure/{image_rel}")
    get(f"{server.url}/azure/{image_rel}?x=1")
    raw(server, f"/azure/{image_rel}", method="HEAD").read()
    assert server.requests[f"/azure/{image_rel}"] == before + 2


@pytest.mark.parametrize(
    "path",
    [
        "/gcp/nacti-unzipped/part0/sub000/missing.jpg",
        "/gcp/../_datasets.json",
        "/gcp/nacti/../_datasets.json",
        "/gcp/%2e%2e/_datasets.json",
        "/gcp/nacti-unzipped",
        "/gcp/",
        "/other/nacti/nacti_metadata.1.14.json.zip",
        "/nacti/nacti_metadata.1.14.json.zip",
    ],
)
def test_not_found(server, path):
    with raw(server, path) as resp:
        assert (resp.status, resp.read()) == (404, b"not found")


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [("bytes=0-9", 0, 9), ("bytes=100-", 100, None), ("bytes=-5", -5, None), ("bytes=3-3", 3, 3)],
)
def test_range(server, dataset, image_rel, spec, start, end):
    data = (dataset[0] / image_rel).read_bytes()
    status, headers, body = get(f"{server.url}/gcp/{image_rel}", {"Range": spec})
    expected = data[start : None if end is None else end + 1]
    first = start % len(data)
    assert status == 206 and body == expected
    assert headers["Content-Range"] == f"bytes {first}-{first + len(body) - 1}/{len(data)}"
    assert headers["Content-Length"] == str(len(body))


def test_range_unsatisfiable(server, dataset, image_rel):
    size = (dataset[0] / image_rel).stat().st_size
    for spec in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        status, headers, _ = get(f"{server.url}/gcp/{image_rel}", {"Range": spec})
        assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    status, _, body = get(f"{server.url}/gcp/{image_rel}", {"Range": "bytes=5-1"})
    assert status == 200 and len(body) == size  # invalid ranges are ignored


def test_token(dataset, image_rel):
    with LilaStandin(dataset[0], token=TOKEN) as srv:
        assert get(f"{srv.url}/gcp/{image_rel}")[0] == 403
        assert get(f"{srv.url}/gcp/{image_rel}?sv=2020&sig=wrong")[0] == 403
        assert get(f"{srv.url}/azure/{image_rel}?{TOKEN}")[0] == 200
        status, _, body = get(srv.index_url)
        assert status == 200 and TOKEN not in body.decode() and "sig=" not in body.decode()


# ---------------------------------------------------------------------------------------------
# Faults


def test_status_faults_are_consumed_in_order(server, image_rel):
    url = f"{server.url}/gcp/{image_rel}"
    server.faults.add("nacti-unzipped/part0/*", [404, 410, "500", 502, 503, "ok", 500])
    seen = [get(url)[0] for _ in range(8)]
    assert seen == [404, 410, 500, 502, 503, 200, 500, 200]
    assert server.faults.pending() == 0


def test_fault_pattern_ignores_cloud_and_other_paths(server, image_rel):
    server.faults.add("nacti/*.zip", [503])
    assert get(f"{server.url}/aws/{image_rel}")[0] == 200
    assert get(f"{server.url}/azure/nacti/nacti_metadata.1.14.json.zip")[0] == 503
    server.faults.add("lila_camera_trap_datasets.csv", [502])
    assert get(server.index_url)[0] == 502
    assert get(server.index_url)[0] == 200


def test_retry_after(server, image_rel):
    server.faults.add(image_rel, [("429", 3), "429:1.5", 429])
    url = f"{server.url}/gcp/{image_rel}"
    retry_after = []
    for _ in range(3):
        status, headers, _ = get(url)
        assert status == 429
        retry_after.append(headers.get("Retry-After"))
    assert retry_after == ["3", "1.5", None]


def test_default_fault_persists_until_clear(server, image_rel):
    server.faults.set_default("nacti-unzipped/*", 503)
    server.faults.add(image_rel, [200])
    url = f"{server.url}/gcp/{image_rel}"
    assert [get(url)[0] for _ in range(3)] == [200, 503, 503]
    assert get(server.index_url)[0] == 200
    server.faults.clear()
    assert get(url)[0] == 200


def test_truncate(server, dataset, image_rel):
    size = (dataset[0] / image_rel).stat().st_size
    server.faults.add(image_rel, ["truncate"])
    with raw(server, f"/gcp/{image_rel}") as resp, pytest.raises(http.client.IncompleteRead) as err:
        assert resp.status == 200 and resp.headers["Content-Length"] == str(size)
        resp.read()
    assert len(err.value.partial) == size // 2


def test_reset_sends_rst(server, image_rel):
    server.faults.add(image_rel, ["reset", "reset"])
    with pytest.raises(ConnectionResetError):
        raw(server, f"/gcp/{image_rel}")
    # A raw socket tells an RST (error) apart from a graceful FIN (b"").
    with socket.create_connection(urlsplit(server.url).netloc.split(":"), timeout=5) as sock:
        sock.sendall(f"GET /gcp/{image_rel} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)
    assert get(f"{server.url}/gcp/{image_rel}")[0] == 200


def test_stall(server, dataset, image_rel):
    server.faults.add(image_rel, ["stall:5"])
    with raw(server, f"/gcp/{image_rel}", timeout=0.3) as resp:
        assert resp.status == 200
        assert resp.read(16) == (dataset[0] / image_rel).read_bytes()[:16]
        with pytest.raises(TimeoutError):
            resp.read()


def test_stop_is_not_blocked_by_stall(dataset, image_rel):
    srv = LilaStandin(dataset[0]).start()
    srv.faults.set_default("*", "stall:30")
    url = f"{srv.url}/gcp/{image_rel}"
    t = threading.Thread(
        target=lambda: pytest.raises(http.client.IncompleteRead, get, url), daemon=True
    )
    t.start()
    time.sleep(0.2)
    began = time.monotonic()
    srv.stop()
    assert time.monotonic() - began < 2
    t.join(2)
    assert not t.is_alive()


def test_corrupt_at_source(server, dataset, image_rel):
    data = (dataset[0] / image_rel).read_bytes()
    server.faults.add(image_rel, ["corrupt", "corrupt"])
    status, headers, body = get(f"{server.url}/gcp/{image_rel}")
    assert status == 200 and body == data[: len(data) * 6 // 10]
    assert headers["Content-Length"] == str(len(body))
    assert headers["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert not body.endswith(b"\xff\xd9")
    with Image.open(io.BytesIO(body)) as im, pytest.raises(OSError):
        im.load()
    status, headers, tail = get(f"{server.url}/gcp/{image_rel}", {"Range": "bytes=-4"})
    assert status == 206 and tail == body[-4:]  # ranges apply to the corrupt source


def test_bad_actions_are_rejected():
    plan = FaultPlan()
    for bad in ("explode", 302, True, ("404", 1), "stall:x"):
        with pytest.raises(ValueError):
            plan.add("*", [bad])
    plan.add("*", "truncate")  # a single action needs no list
    assert plan.take("a/b.jpg") == ("truncate", None) and plan.take("a/b.jpg") is None


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_serve(tmp_path):
    cmd = [sys.executable, "-m", "standins.lila", "serve", "--root", str(tmp_path), "--port", "0"]
    with subprocess.Popen(
        [*cmd, "--generate", "3", "--seed", "2"],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            line = proc.stdout.readline()
            assert line.startswith("LILA stand-in serving http://127.0.0.1:")
            index_url = line.split()[-1]
            assert index_url.endswith("/lila_camera_trap_datasets.csv")
            rows = list(csv.DictReader(io.StringIO(get(index_url)[2].decode())))
            assert rows[0]["name"] == "NACTI-demo"
            assert get(rows[0]["metadata_url_gcp"])[0] == 200
            assert is_generated(tmp_path, n_images=3, seed=2)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(5) == 0
