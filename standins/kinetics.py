"""Serve generated Kinetics-style data the way YouTube (as a direct link) and the CVDF mirror do.

Tests and the offline demo use this instead of youtube.com and the CVDF S3 bucket: a real
HTTP/1.1 server on 127.0.0.1 with full source videos under /youtube/<id>.mp4 (what yt-dlp
fetches, with Range support), annotation CSVs, pre-trimmed clip archives and the list of
archive URLs under /kinetics/. Every frame shows its own source index (standins.video), so a
test can tell exactly which part of a video a trimmed clip came from.
"""

from __future__ import annotations

import argparse
import base64
import collections
import csv
import gzip
import hashlib
import io
import json
import re
import shutil
import sys
import tarfile
import threading
from pathlib import Path

import av

from standins.http import Handler, Standin, corrupted, serve_until_signalled
from standins.video import make_clip

MANIFEST_NAME = "_kinetics.json"
N_ARCHIVES = 2
N_TEST = 2
DEFAULT_CLASSES = {"arm wrestling": 3, "bungee jumping": 3, "playing cards, poker": 2}
CSV_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split", "is_cc")
TEST_COLUMNS = ("youtube_id", "time_start", "time_end", "split")
CONTENT_TYPES = {".mp4": "video/mp4", ".csv": "text/csv", ".gz": "application/gzip"}
# Clients abort downloads mid-body; writing in chunks keeps bytes_sent close to what left.
SEND_CHUNK = 64 * 1024
ROUTES = (
    re.compile(r"youtube/[^/]+\.mp4"),
    re.compile(r"kinetics/[^/]+\.csv"),
    re.compile(r"kinetics/[^/]+/part_\d+\.tar\.gz"),
)
PATH_LIST_RE = re.compile(r"kinetics/k400_([A-Za-z0-9_]+)_path\.txt")


# ---------------------------------------------------------------------------------------------
# Generation


def _digest(*parts) -> bytes:
    """Hash parts into 32 bytes, so every derived value is stable across runs and platforms."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()


def video_id(*parts) -> str:
    """Derive an 11-character YouTube-style id from parts."""
    return base64.urlsafe_b64encode(_digest("id", *parts)).decode()[:11]


def _number(*parts) -> int:
    return int.from_bytes(_digest("n", *parts)[:4], "big")


def keyframes(path: Path) -> list[int]:
    """Return the display indices of an mp4's keyframes (as a seeking client finds them)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        return sorted(
            round(pkt.pts * pkt.time_base * rate)
            for pkt in container.demux(stream)
            if pkt.is_keyframe and pkt.pts is not None
        )


def _window(vid: str, seed: int, n_frames: int, fps: int, clip_seconds: int, keys: set[int]) -> int:
    """Pick an integer start second off every keyframe, so a trim must cut mid-GOP."""
    last = n_frames // fps - clip_seconds
    starts = [s for s in range(0, last + 1) if s * fps not in keys]
    if not starts:
        raise ValueError(f"no mid-GOP start for a {clip_seconds} s clip in {n_frames} frames")
    return starts[_number(seed, "start", vid) % len(starts)]


def clip_name(vid: str, start: int, end: int) -> str:
    """Name a trimmed clip the way the CVDF archives do."""
    return f"{vid}_{start:06d}_{end:06d}.mp4"


def _tar_gz(members: dict[str, bytes]) -> bytes:
    """Pack members sorted by name with fixed metadata, so the archive bytes are reproducible."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(members[name]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(members[name]))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue())


def generate(
    root: Path,
    *,
    classes: dict[str, int] | None = None,
    seconds: float = 6.0,
    fps: int = 10,
    width: int = 160,
    height: int = 120,
    gop: int = 25,
    clip_seconds: int = 2,
    split: str = "val",
    missing: int = 1,
    seed: int = 0,
    test: int = N_TEST,
) -> dict:
    """Write deterministic Kinetics-style videos, CSVs and clip archives under root; return the
    manifest (also written to root/_kinetics.json).

    `classes` maps label -> number of downloadable videos; `missing` extra CSV rows (labels in
    turn) have no video, so the server answers 404 for them. `test` more videos are listed only
    in kinetics/test.csv (no label column, as in the real test split).
    """
    if split == "test":
        raise ValueError("split 'test' is reserved for the unlabelled kinetics/test.csv")
    root = Path(root)
    classes = dict(DEFAULT_CLASSES if classes is None else classes)
    args = {
        "classes": classes,
        "seconds": seconds,
        "fps": fps,
        "width": width,
        "height": height,
        "gop": gop,
        "clip_seconds": clip_seconds,
        "split": split,
        "missing": missing,
        "seed": seed,
        "test": test,
    }
    # A re-run with other args must not leave stale videos or archives behind.
    for stale in (root / "youtube", root / "kinetics"):
        shutil.rmtree(stale, ignore_errors=True)
    (root / "youtube").mkdir(parents=True)
    (root / "kinetics" / split).mkdir(parents=True)
    video = {"fps": fps, "width": width, "height": height, "gop": gop}

    # (label, split, has_video) per id; dict order is generation order.
    plan: dict[str, tuple[str | None, str, bool]] = {}
    for label, count in classes.items():
        for k in range(count):
            plan[video_id(seed, split, label, k)] = (label, split, True)
    labels = list(classes)
    if missing and not labels:
        raise ValueError("missing rows need at least one class to label them")
    for k in range(missing):
        plan[video_id(seed, "missing", k)] = (labels[k % len(labels)], split, False)
    for k in range(test):
        plan[video_id(seed, "test", k)] = (None, "test", True)
    if len(plan) != sum(classes.values()) + missing + test:
        raise ValueError("video id collision; pick another seed")

    n_frames = round(seconds * fps)
    videos: dict[str, dict] = {}
    for vid, (label, vsplit, has_video) in plan.items():
        rel = f"youtube/{vid}.mp4" if has_video else None
        if rel:
            make_clip(root / rel, seconds=seconds, seed=_number(seed, "video", vid), **video)
            keys = keyframes(root / rel)
        else:
            keys = list(range(0, n_frames, gop))  # what the vanished upload would have had
        start = _window(vid, seed, n_frames, fps, clip_seconds, set(keys))
        videos[vid] = {
            "label": label,
            "split": vsplit,
            "start": start,
            "end": start + clip_seconds,
            "fps": fps,
            "frames": n_frames,
            "keyframes": keys,
            "has_video": has_video,
            "video": rel,
            "archive": None,
            "member": None,
            "is_cc": _number(seed, "cc", vid) % 2,
        }

    rows = [
        {
            "label": v["label"],
            "youtube_id": vid,
            "time_start": v["start"],
            "time_end": v["end"],
            "split": v["split"],
            "is_cc": v["is_cc"],
        }
        for vid, v in videos.items()
        if v["split"] == split
    ]
    rows.sort(key=lambda r: (r["label"], r["youtube_id"]))  # the real files' order
    split_csv, test_csv = f"kinetics/{split}.csv", "kinetics/test.csv"
    _write_csv(root / split_csv, CSV_COLUMNS, rows)
    test_rows = [
        {"youtube_id": vid, "time_start": v["start"], "time_end": v["end"], "split": "test"}
        for vid, v in sorted(videos.items())
        if v["split"] == "test"
    ]
    _write_csv(root / test_csv, TEST_COLUMNS, test_rows)

    # Trimmed clips, spread round-robin by id over the archives, as the mirror pre-cut them.
    archives = [f"kinetics/{split}/part_{n}.tar.gz" for n in range(N_ARCHIVES)]
    members: list[dict[str, bytes]] = [{} for _ in archives]
    clipped = sorted(vid for vid, v in videos.items() if v["split"] == split and v["has_video"])
    for n, vid in enumerate(clipped):
        v = videos[vid]
        name = clip_name(vid, v["start"], v["end"])
        tmp = root / "kinetics" / split / name
        make_clip(
            tmp,
            seconds=clip_seconds,
            first_index=v["start"] * fps,
            seed=_number(seed, "clip", vid),
            **video,
        )
        members[n % N_ARCHIVES][name] = tmp.read_bytes()
        tmp.unlink()
        v["archive"], v["member"] = archives[n % N_ARCHIVES], name
    # A clip the CSV does not list: the mirror holds videos a selection must skip.
    extra = clip_name(video_id(seed, "extra"), 0, clip_seconds)
    tmp = root / "kinetics" / split / extra
    make_clip(tmp, seconds=clip_seconds, seed=_number(seed, "clip", extra), **video)
    members[0][extra] = tmp.read_bytes()
    tmp.unlink()
    for rel, content in zip(archives, members, strict=True):
        (root / rel).write_bytes(_tar_gz(content))

    manifest = {
        "args": args,
        "split": split,
        "csv": [split_csv, test_csv],
        "path_list": f"kinetics/k400_{split}_path.txt",
        "archives": archives,
        "extra_members": {archives[0]: [extra]},
        "videos": videos,
    }
    tmp = root / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(root / MANIFEST_NAME)
    return manifest


def is_generated(root: Path, **kwargs) -> bool:
    """Return True if root holds data generated with these args and all its files."""
    root = Path(root)
    expected = generate.__kwdefaults__ | kwargs
    expected["classes"] = dict(
        DEFAULT_CLASSES if expected["classes"] is None else expected["classes"]
    )
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("args") != expected:
        return False
    files = [*manifest["csv"], *manifest["archives"]]
    files += [v["video"] for v in manifest["videos"].values() if v["video"]]
    return all((root / rel).is_file() for rel in files)


# ---------------------------------------------------------------------------------------------
# Server


class _CountingWriter:
    """Wrap a handler's wfile to count body bytes per path once headers are out."""

    def __init__(self, raw, handler: _KineticsHandler):
        self._raw, self._handler = raw, handler

    def write(self, data) -> int:
        key = self._handler.counting
        if key is None:
            return self._raw.write(data)
        standin = self._handler.server.standin
        view = memoryview(data)
        for i in range(0, len(view), SEND_CHUNK):
            chunk = view[i : i + SEND_CHUNK]
            # Count first: a client may read the bytes before this thread runs again.
            standin._count(key, len(chunk))
            try:
                self._raw.write(chunk)
            except OSError:
                standin._count(key, -len(chunk))
                raise
        return len(view)

    def __getattr__(self, name):
        return getattr(self._raw, name)


class _KineticsHandler(Handler):
    server_version = "kinetics-standin/1.0"

    def setup(self):
        super().setup()
        self.counting: str | None = None  # the URL path whose body is being sent, if any
        self._count_as: str | None = None
        self._status = 0
        self.wfile = _CountingWriter(self.wfile, self)

    def send_response(self, code, message=None):
        self._status = code
        super().send_response(code, message)

    def end_headers(self):
        super().end_headers()
        # Count only successful bodies (not 416 or error text), from the first body byte.
        if self._count_as is not None and self._status in (200, 206):
            self.counting = self._count_as

    def route(self, path: str, query: str, head: bool) -> None:
        standin: KineticsStandin = self.server.standin
        rel = path[1:] if path.startswith("/") else ""
        listed = PATH_LIST_RE.fullmatch(rel)
        if not listed and not any(r.fullmatch(rel) for r in ROUTES):
            return self.simple(404, b"not found", head)
        fault = standin.faults.take(rel)
        if self.pre_fault(fault, head):
            return None
        if listed:
            text = standin.path_list(listed.group(1))
            if text is None:
                return self.simple(404, b"not found", head)
            data, ctype = text.encode(), "text/plain; charset=utf-8"
        else:
            fp = standin.resolve(rel)
            if fp is None:
                return self.simple(404, b"not found", head)
            data = fp.read_bytes()
            ctype = CONTENT_TYPES.get(fp.suffix.lower(), "application/octet-stream")
        data = corrupted(data) if fault and fault[0] == "corrupt" else data
        extra = [("ETag", f'"{hashlib.md5(data).hexdigest()}"')]
        self._count_as = None if head else path
        try:
            return self.serve(data, ctype, head, fault, extra)
        finally:
            self._count_as = self.counting = None


class KineticsStandin(Standin):
    """Local HTTP stand-in for YouTube direct video links and the CVDF Kinetics mirror.

    `bytes_sent` counts body bytes written per URL path (Range responses count their part
    only). Fault patterns match the path without its leading slash, e.g. "youtube/*.mp4".
    `archive_base` makes the path list point at another origin.
    """

    handler = _KineticsHandler
    name = "kinetics-standin"

    def __init__(
        self,
        root: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        archive_base: str | None = None,
        tls=None,
    ):
        super().__init__(host=host, port=port, tls=tls)
        self.root = Path(root).resolve()
        self.archive_base = archive_base or self.url
        self.bytes_sent: collections.Counter = collections.Counter()
        self._count_lock = threading.Lock()

    def video_url(self, vid: str) -> str:
        """Return the direct link yt-dlp gets for a YouTube id."""
        return f"{self.url}/youtube/{vid}.mp4"

    def kinetics_url(self, rel: str) -> str:
        """Return this server's URL for a root-relative kinetics/ path."""
        return f"{self.url}/{rel}"

    def manifest(self) -> dict | None:
        """Return root/_kinetics.json, or None if root holds no generated data."""
        try:
            return json.loads((self.root / MANIFEST_NAME).read_text())
        except (OSError, ValueError):
            return None

    def path_list(self, split: str) -> str | None:
        """Render k400_<split>_path.txt with this server's archive URLs, or None."""
        manifest = self.manifest()
        if manifest is None or manifest["split"] != split:
            return None
        return "".join(f"{self.archive_base}/{rel}\n" for rel in manifest["archives"])

    def resolve(self, rel: str) -> Path | None:
        """Map a request path to a file under root, or None (never outside root)."""
        parts = rel.split("/")
        if not rel or "\\" in rel or "\0" in rel or any(p in ("", ".", "..") for p in parts):
            return None
        fp = (self.root / rel).resolve()
        if not fp.is_relative_to(self.root) or not fp.is_file():
            return None
        return fp

    def _count(self, path: str, n: int) -> None:
        with self._count_lock:
            self.bytes_sent[path] += n


# ---------------------------------------------------------------------------------------------
# CLI


def main(argv=None) -> int:
    """Run the stand-in from the command line."""
    parser = argparse.ArgumentParser(prog="python -m standins.kinetics", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="generate (optionally) and serve Kinetics-style data")
    serve.add_argument("--root", type=Path, required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8766)
    serve.add_argument("--generate", action="store_true", help="generate data first if stale")
    serve.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    args.root.mkdir(parents=True, exist_ok=True)
    gen = {"seed": args.seed}
    if args.generate and not is_generated(args.root, **gen):
        generate(args.root, **gen)
    elif not (args.root / MANIFEST_NAME).is_file():
        generate(args.root, **gen)
    server = KineticsStandin(args.root, host=args.host, port=args.port)
    serve_until_signalled(server, f"Kinetics stand-in serving {server.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
