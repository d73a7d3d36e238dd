"""Bad input through the real fetch entry point: a clear error, exit 2, nothing written."""

from __future__ import annotations

import json
import sys
import zipfile

import pytest

from tests.conftest import make_project


def index_csv(server, meta_rel: str) -> str:
    return (
        "name,metadata_url_gcp,image_base_url_gcp\n"
        f"NACTI-demo,{server.url}/gcp/{meta_rel},{server.url}/gcp/nacti-unzipped\n"
    )


def good_metadata(standin_root) -> bytes:
    with zipfile.ZipFile(standin_root / "nacti" / "nacti_metadata.1.14.json.zip") as zf:
        return zf.read(zf.namelist()[0])


def zipped(members: dict[str, bytes], stored: bool = False) -> bytes:
    import io

    buf = io.BytesIO()
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def case_files(name: str, standin_root, server) -> tuple[str, dict[str, bytes], str]:
    """Return (index path, {relative path: bytes}, expected message) for one bad input."""
    good = good_metadata(standin_root)
    doc = json.loads(good)
    meta = f"bad-{name}/meta.zip"
    if name == "index-ragged":
        return (
            "bad-index-ragged/index.csv",
            {"bad-index-ragged/index.csv": b'name,metadata_url_gcp,image_base_url_gcp\n"x,y\n'},
            "index CSV",
        )
    if name == "index-columns":
        return (
            "bad-index-columns/index.csv",
            {"bad-index-columns/index.csv": b"dataset,url\nNACTI-demo,http://x\n"},
            "lacks column",
        )
    files = {f"bad-{name}/index.csv": index_csv(server, meta).encode()}
    if name == "json-malformed":
        files[meta] = zipped({"m.json": good[: len(good) // 2]})
        expect = "metadata JSON"
    elif name == "json-oversized":
        files[meta] = zipped({"m.json": good + b" " * 300_000})
        expect = "over the configured limit"
    elif name == "zip-no-json":
        files[meta] = zipped({"readme.txt": b"nothing here"})
        expect = "exactly one .json"
    elif name == "zip-traversal":
        files[meta] = zipped({"../../escape.json": good})
        expect = "unsafe member name"
    elif name == "zip-garbage":
        files[meta] = b"PK\x03\x04" + b"\x00" * 100
        expect = "neither a zip nor a JSON|malformed zip"
    elif name == "zip-bad-crc":
        # Stored, not deflated, so one changed letter keeps the JSON valid and only the CRC
        # tells: the reader must say so, not crash.
        blob = zipped({"m.json": good}, stored=True)
        at = blob.index(b"generated stand-in")
        files[meta] = blob[:at] + b"G" + blob[at + 1 :]
        expect = "metadata archive is corrupt: Bad CRC-32"
    elif name == "json-huge-value":
        doc["info"]["description"] = "x" * 300_000
        files[meta] = zipped({"m.json": json.dumps(doc).encode()})
        expect = "single JSON value .* longer than the configured limit of 100000"
    elif name == "index-oversized":
        files[f"bad-{name}/index.csv"] += b"#" * 3000
        expect = r"cannot download the datasets index: failed \(body over the cap of 2000 bytes\)"
    elif name == "metadata-oversized":
        files[meta] = zipped({"m.json": good}, stored=True)  # the download itself is too big
        expect = r"cannot download the metadata: failed \(body over the cap of 5000 bytes\)"
    elif name == "metadata-missing":
        expect = r"cannot download the metadata: missing \(http 404\)"
    elif name in ("filename-dotdot", "filename-absolute"):
        bad = "../../../../tmp/owned.jpg" if name == "filename-dotdot" else "/etc/passwd"
        for im in doc["images"]:
            im["file_name"] = bad
        files[meta] = zipped({"m.json": json.dumps(doc).encode()})
        expect = "unsafe file_name"
    else:
        raise AssertionError(name)
    return f"bad-{name}/index.csv", files, expect


CASES = [
    "index-ragged",
    "index-columns",
    "json-malformed",
    "json-oversized",
    "zip-no-json",
    "zip-traversal",
    "zip-garbage",
    "filename-dotdot",
    "filename-absolute",
    "zip-bad-crc",
    "json-huge-value",
    "index-oversized",
    "metadata-oversized",
    "metadata-missing",
]
# Limits a case lowers in conf/source/lila.yaml (the default is far above the test data).
LIMITS = {
    "json-huge-value": ("max_json_value_bytes: 67108864", "max_json_value_bytes: 100000"),
    "index-oversized": ("max_index_bytes: 67108864", "max_index_bytes: 2000"),
    "metadata-oversized": ("max_metadata_bytes: 8000000000", "max_metadata_bytes: 5000"),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_refused_cleanly(name, tmp_path, server, standin_root):
    index_rel, files, expect = case_files(name, standin_root, server)
    for rel, data in files.items():
        (standin_root / rel).parent.mkdir(parents=True, exist_ok=True)
        (standin_root / rel).write_bytes(data)
    proj = make_project(tmp_path / "repo", tmp_path / "cache", f"{server.url}/gcp/{index_rel}")
    limits = dict(LIMITS)
    limits["json-oversized"] = (
        "max_metadata_bytes: 8000000000",
        f"max_metadata_bytes: {len(good_metadata(standin_root)) + 1000}",
    )
    if name in limits:
        proj.set_conf("conf/source/lila.yaml", *limits[name])
        proj.compose()
    before = sorted(p for p in tmp_path.rglob("*") if "cache" not in p.parts)
    proc = proj.run(
        sys.executable,
        "-m",
        "stages.fetch",
        "lila",
        "data/lila/fetch",
        "data/lila/metrics/fetch.json",
        "data/lila/plots/fetch.json",
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ")
    import re

    assert re.search(expect, err), err
    assert "Traceback" not in proc.stderr
    after = sorted(p for p in tmp_path.rglob("*") if "cache" not in p.parts)
    assert after == before, "files were written"
    # Damaged bytes are forgotten, so the next run downloads the metadata afresh; a limit or
    # structure problem keeps the download (fetching it again would not change it).
    import sqlite3

    db = sqlite3.connect(tmp_path / "cache" / "ledger-lila.sqlite")
    recorded = {u.rsplit("/", 1)[1] for (u,) in db.execute("SELECT url FROM results")}
    db.close()
    damaged = name in ("json-malformed", "zip-garbage", "zip-bad-crc")
    if name.startswith(("json", "zip", "filename")):
        assert ("meta.zip" in recorded) != damaged, recorded
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "owned.jpg").exists()
