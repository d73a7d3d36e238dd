"""README claims shown against real parts: fetch's and import's exit 75, the full decode, the
GCS md5 check, and compose refusing a short_side no attribute carries."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from stages.core.errors import ConfigError
from stages.net.cache import SPILL
from stages.pipeline.compose import compose, write_params
from tests.hostile import JPEG, HostileServer, fixed
from tests.test_download import assert_cache_sound, make

ROOT = Path(__file__).resolve().parent.parent


def stage_dir(tmp_path: Path, *edits: tuple[str, str, str]) -> Path:
    """Return a directory a stage runs in: conf/ with (file, old, new) edits, params.yaml."""
    root = tmp_path / "proj"
    if not root.exists():
        shutil.copytree(ROOT / "conf", root / "conf")
    for rel, old, new in edits:
        path = root / "conf" / rel
        text = path.read_text()
        assert old in text, f"{old!r} not in {rel}"
        path.write_text(text.replace(old, new, 1))
    write_params(root / "conf", root / "params.yaml")
    return root


def run_stage(root: Path, *argv: str) -> subprocess.CompletedProcess:
    """Run `python -m <argv>` in root, as DVC would run a stage's command."""
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=root, capture_output=True, text=True, timeout=120
    )


# ---------------------------------------------------------------- fetch: exit 75


def test_fetch_exits_75_while_failed_items_remain_unless_allowed(tmp_path, server, cache_dir):
    fast = ("fetch/default.yaml", "backoff: 0.5 ", "backoff: 0.01 ")
    index = ("source/lila.yaml", "http://127.0.0.1:8765/lila_camera_trap_datasets.csv")
    root = stage_dir(tmp_path, fast, (*index, server.index_url))
    argv = ["stages.fetch", "lila", "fetch", "metrics.json", "plot.json"]
    server.faults.set_default("nacti-unzipped/part1/*", 503)  # a 503 every time: retries run out

    def fetched(proc, code):
        assert proc.returncode == code, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        return json.loads((root / "metrics.json").read_text())["lila"]

    first = run_stage(root, *argv)
    failing = fetched(first, 75)
    assert failing["failed"] > 0 and failing["fetched"] > 0
    assert "re-run `dvc repro` to resume" in first.stderr
    root = stage_dir(
        tmp_path,
        ("fetch/default.yaml", "allow_transient_failures: false", "allow_transient_failures: true"),
    )
    assert fetched(run_stage(root, *argv), 0) == failing
    server.faults.clear()
    root = stage_dir(
        tmp_path,
        ("fetch/default.yaml", "allow_transient_failures: true", "allow_transient_failures: false"),
    )
    done = fetched(run_stage(root, *argv), 0)
    assert done["failed"] == 0 and done["fetched"] == failing["fetched"] + failing["failed"]


# ---------------------------------------------------------------- body checks


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """Return one PNG chunk with its length and a correct CRC."""
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


IEND = png_chunk(b"IEND", b"")


def broken_images() -> dict[str, bytes]:
    """Images whose header and end marker are whole but whose content does not decode."""
    from PIL import Image

    pixels = Image.frombytes("RGB", (32, 32), bytes(range(256)) * 12)
    buf = io.BytesIO()
    pixels.save(buf, "PNG")
    png = buf.getvalue()
    at = png.index(b"IDAT") - 4
    (size,) = struct.unpack(">I", png[at : at + 4])
    idat = png[at + 8 : at + 8 + size]
    buf = io.BytesIO()
    pixels.save(buf, "JPEG")
    jpeg = buf.getvalue()
    dht = jpeg.index(b"\xff\xc4")
    return {
        # Half the compressed pixels, in a chunk whose CRC is right, then IEND.
        "/cut-pixels.png": png[:at] + png_chunk(b"IDAT", idat[: size // 2]) + IEND,
        # A Huffman table whose code counts cannot be: SOI ... EOI are all in place.
        "/bad-table.jpg": jpeg[: dht + 5] + b"\xff" * 16 + jpeg[dht + 21 :],
    }


@pytest.mark.parametrize("path", list(broken_images()))
def test_verify_decode_catches_what_the_structure_check_lets_through(tmp_path, path):
    body = broken_images()[path]
    with HostileServer() as hostile:
        hostile.scripts[path] = fixed(body)
        url = f"{hostile.url}{path}"
        structure_only = make(tmp_path / "off", verify_decode=False).fetch(url)
        decoded = make(tmp_path / "on", verify_decode=True)
        res = decoded.fetch(url)
    assert structure_only.status == "ok"
    assert (res.status, res.attempts) == ("corrupt", 1)
    assert res.reason == "undecodable image: OSError"
    assert_cache_sound(decoded)
    assert not any(p.is_file() for p in decoded.cache.objects.rglob("*"))


def goog_hash(body: bytes) -> str:
    """Return a GCS `x-goog-hash` header promising `body`'s MD5 (and some CRC32C)."""
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    return f"x-goog-hash: crc32c=AAAAAA==,md5={md5}"


@pytest.mark.parametrize("size", [len(JPEG), SPILL + 1024], ids=["in-memory", "spilled"])
def test_a_wrong_gcs_md5_fails_the_item_and_poisons_nothing(tmp_path, size):
    body = JPEG[:4] + b"j" * (size - 6) + JPEG[-2:]
    with HostileServer() as hostile:
        hostile.scripts["/wrong.jpg"] = fixed(body, "200 OK", goog_hash(body + b"!"))
        hostile.scripts["/right.jpg"] = fixed(body, "200 OK", goog_hash(body))
        dl = make(tmp_path, retries=2)
        wrong = dl.fetch(f"{hostile.url}/wrong.jpg")
        assert wrong.status == "failed"
        assert wrong.reason == "md5 does not match the server's x-goog-hash"
        assert wrong.transient and hostile.requests["/wrong.jpg"] == 3  # retried, then given up
        assert dl.ledger.get(f"{hostile.url}/wrong.jpg").status == "failed"
        assert_cache_sound(dl)
        assert not any(p.is_file() for p in dl.cache.objects.rglob("*"))
        right = dl.fetch(f"{hostile.url}/right.jpg")
    assert (right.status, right.sha256) == ("ok", hashlib.sha256(body).hexdigest())


# ---------------------------------------------------------------- compose: short_side


def test_compose_refuses_a_short_side_no_attribute_carries(tmp_path):
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    conf = tmp_path / "conf"
    path = conf / "source" / "videodir.yaml"
    shipped = path.read_text()

    def composed(*edits: tuple[str, str]) -> dict:
        text = shipped
        for old, new in edits:
            assert old in text, old
            text = text.replace(old, new, 1)
        path.write_text(text)
        return compose(conf)["sources"]["videodir"]["import_to"]

    no_attribute = ("short_side_attribute: ShortSide", "short_side_attribute: null")
    global_side = ("  short_side: null           # what", "  short_side: 480           # what")
    camera_side = ("      short_side: null\n", "      short_side: 240\n")
    # The attribute present, or no size to carry: composes.
    assert composed(global_side, camera_side)["short_side"] == 480
    assert composed(no_attribute)["tator"]["short_side_attribute"] is None
    for side, where in ((global_side, "import_to"), (camera_side, "import_to.cameras.lobby")):
        with pytest.raises(ConfigError) as err:
            composed(no_attribute, side)
        said = f"{where}.short_side is set but import_to.tator.short_side_attribute is null"
        assert said in str(err.value)
        # The folder target keeps every setting in its sidecar: nothing is lost there.
        folder = composed(no_attribute, side, ("target: tator", "target: folder"))
        assert folder["target"] == "folder"


# ---------------------------------------------------------------- import: job_complete, exit 75


def test_import_reports_job_complete_and_exits_75_until_every_file_is_there(tmp_path, fetched):
    root = stage_dir(tmp_path, ("source/videodir.yaml", "target: tator", "target: folder"))
    argv = ["stages.import_media", "videodir", str(fetched), "import", "m.json", "p.json"]
    argv += ["--report", "r.json"]
    target = root / "data" / "videodir" / "target"  # the shipped import_to.folder
    target.mkdir(parents=True)
    (target / "gate").write_text("a file where the camera's section folder should be")

    def imported(code: int) -> tuple[dict, dict, dict]:
        proc = run_stage(root, *argv)
        assert proc.returncode == code, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        job = json.loads((root / "import" / "job.json").read_text())
        report = json.loads((root / "r.json").read_text())
        return json.loads((root / "m.json").read_text())["videodir"], report, job

    metrics, report, job = imported(75)
    assert metrics["job_complete"] == 0 and job["status"] == "shards_failed"
    assert metrics["import_failed"] == report["failed"] > 0
    assert metrics["imported"] == report["sent"] == report["files"] - report["failed"] > 0
    (target / "gate").unlink()
    metrics, report, job = imported(0)  # the re-run resumes: only the failed files go now
    assert metrics == {"imported": report["files"], "import_failed": 0, "job_complete": 1}
    assert job["status"] == "complete"
    assert report["present"] == report["files"] - report["sent"] > 0
