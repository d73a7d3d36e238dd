"""Clip sections with yt-dlp's Python API, recorded in the shared ledger and object cache.

yt-dlp cuts a section by running `ffmpeg -ss S -t D -i <media URL> -c copy`, which reads only
the byte ranges it needs; it finds ffmpeg on PATH only (its `ffmpeg_location` option does not
reach section downloads), so the executable imageio-ffmpeg ships is linked into a directory
put first on this process's PATH.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from stages.core.parallel import pmap
from stages.core.store import Row
from stages.net.download import part_name
from stages.net.ledger import Result
from stages.sources import Context

log = logging.getLogger("stages.sources.kinetics")

# yt-dlp's messages for videos that are gone for good (removed, private, blocked, 404/410).
PERMANENT = re.compile(
    r"HTTP Error (404|410)|Video unavailable|[Pp]rivate video|video is private|removed by|"
    r"does not exist|[Ss]ign in to confirm your age|account .* terminated|copyright|"
    r"not available in your country|This video has been removed|Unsupported URL",
)
HTTP_STATUS = re.compile(r"HTTP Error (\d{3})")


def ffmpeg_on_path(cache_root: Path) -> None:
    """Put imageio-ffmpeg's executable first on PATH as `ffmpeg` (yt-dlp looks it up there)."""
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    bindir = cache_root / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    link = bindir / "ffmpeg"
    if not (link.is_symlink() and os.readlink(link) == exe):
        tmp = bindir / f".ffmpeg-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(exe)
        os.replace(tmp, link)
    path = os.environ.get("PATH", "")
    if not path.startswith(f"{bindir}{os.pathsep}"):
        os.environ["PATH"] = f"{bindir}{os.pathsep}{path}"


class _Log:
    """Collect yt-dlp's messages instead of printing them."""

    def __init__(self):
        self.errors: list[str] = []

    def debug(self, msg: str) -> None:
        pass

    info = warning = debug

    def error(self, msg: str) -> None:
        self.errors.append(msg)


def classify(message: str) -> tuple[str, str, int | None]:
    """Return (status, stable reason, HTTP status) for a yt-dlp error message."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", message).replace("ERROR: ", "")
    status = HTTP_STATUS.search(text)
    code = int(status.group(1)) if status else None
    if PERMANENT.search(text):
        reason = f"HTTP {code}" if code else PERMANENT.search(text).group(0)
        return "missing", f"unavailable: {reason}", code
    if code:
        return "failed", f"HTTP {code}", code
    if "timed out" in text.lower():
        return "failed", "timed out", None
    if "ffmpeg exited" in text:
        return "failed", "section download failed (ffmpeg)", None
    return "failed", "download error", None


def check_clip(path: Path) -> str | None:
    """Return why a downloaded clip is unusable (no video packets), or None."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "no video stream"
            for packet in container.demux(container.streams.video[0]):
                if packet.size:
                    return None
    except (av.FFmpegError, OSError) as exc:
        return f"unreadable clip: {type(exc).__name__}"
    return "no video packets"


def kill_section_readers(work: Path) -> int:
    """SIGKILL this process's children working in `work` (the ffmpeg reading a section)."""
    me, mark, n = os.getpid(), str(work).encode(), 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_bytes().rsplit(b")", 1)[1].split()[1])
            if ppid != me or mark not in (stat.parent / "cmdline").read_bytes():
                continue
            os.kill(int(stat.parent.name), signal.SIGKILL)
            n += 1
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return n


def attempt(row: Row, cfg, ctx: Context) -> Result:
    """Download one clip section once; return the outcome (never raises for the clip)."""
    from yt_dlp import YoutubeDL
    from yt_dlp.utils import DownloadError, download_range_func

    f, dl = cfg.fetch, ctx.downloader
    meta = row.meta
    url = row.url.split("#", 1)[0]
    work = Path(part_name(f"{dl.tmp}/"))
    work.mkdir()
    logger = _Log()
    timeout_us = str(int(f.socket_timeout * 1e6))
    opts = {
        "outtmpl": {"default": str(work / "clip.%(ext)s")},
        "format": f.format,
        "download_ranges": download_range_func(None, [(meta["time_start"], meta["time_end"])]),
        "logger": logger,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "noplaylist": True,
        "cachedir": False,
        "socket_timeout": f.socket_timeout,
        "retries": 0,  # attempts, backoff and the ledger are ours
        "fragment_retries": 0,
        "extractor_retries": 0,
        "max_filesize": f.max_clip_bytes,
        # ffmpeg reads the section: a stalled server fails the read, a huge one hits -fs.
        "external_downloader_args": {
            "ffmpeg_i": ["-rw_timeout", timeout_us],
            "ffmpeg_o": ["-fs", str(f.max_clip_bytes)],
        },
        "color": {"stderr": "no_color", "stdout": "no_color"},
    }
    # The attempt's deadline: socket_timeout bounds silence, this bounds a trickle. yt-dlp
    # gives no handle on the ffmpeg it runs, so the watchdog finds it by its output path.
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        kill_section_readers(work)

    watchdog = threading.Timer(dl.cfg.attempt_timeout, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        try:
            with YoutubeDL(opts) as ydl:
                code = ydl.download([url])
        except DownloadError as exc:
            if expired.is_set():
                return Result(row.url, "failed", "attempt deadline exceeded")
            status, reason, http = classify(str(exc))
            return Result(row.url, status, reason, http_status=http)
        except Exception as exc:  # anything else yt-dlp raises on a hostile reply: this clip's
            return Result(row.url, "failed", f"yt-dlp error: {type(exc).__name__}")
        finally:
            watchdog.cancel()
        if expired.is_set():
            return Result(row.url, "failed", "attempt deadline exceeded")
        if code:
            status, reason, http = classify(" ".join(logger.errors))
            return Result(row.url, status, reason, http_status=http)
        outs = sorted(p for p in work.iterdir() if p.is_file() and not p.name.endswith(".part"))
        if not outs:
            return Result(row.url, "failed", "no output file")
        out = outs[0]
        size = out.stat().st_size
        if size > f.max_clip_bytes:
            return Result(row.url, "corrupt", f"clip larger than {f.max_clip_bytes} bytes")
        why = check_clip(out)
        if why:
            return Result(row.url, "failed", why)
        sha = hashlib.sha256()
        with open(out, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                sha.update(block)
        digest = sha.hexdigest()
        os.replace(out, dl.object_path(digest))
        return Result(row.url, "ok", "", digest, size)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fetch_clip(row: Row, cfg, ctx: Context) -> Result:
    """Download one clip with bounded retries and backoff on transient failures."""
    dl = ctx.downloader
    tries = dl.cfg.retries + 1
    for n in range(tries):
        res = attempt(row, cfg, ctx)
        res.attempts = n + 1
        if res.status != "failed" or n + 1 == tries:
            return res
        dl.sleep(dl.backoff(n + 1, None))
    return res


def download(cfg, rows: list[Row], ctx: Context) -> dict[str, Result]:
    """Fetch pending clips (reusing the ledger's outcomes); return results by row URL."""
    dl = ctx.downloader
    ffmpeg_on_path(dl.root)
    recorded = dl.ledger.all()
    results: dict[str, Result] = {}
    todo = []
    for row in sorted(rows, key=lambda r: r.url):
        prior = dl.reusable(recorded.get(row.url))
        if prior is not None:
            results[row.url] = prior
        else:
            todo.append(row)
    bar = tqdm(
        total=len(rows),
        initial=len(results),
        desc=f"fetch@{ctx.source_name}",
        unit="clip",
        disable=not sys.stderr.isatty(),
        dynamic_ncols=True,
    )
    start = time.monotonic()
    try:
        for res in pmap(lambda r: fetch_clip(r, cfg, ctx), todo, workers=cfg.fetch.clip_workers):
            dl.ledger.put(res)  # at once: a killed run keeps every finished clip
            results[res.url] = res
            bar.update(1)
    finally:
        bar.close()
    log.info(
        "fetch@%s: %d clips, %d new in %.1fs",
        ctx.source_name,
        len(rows),
        len(todo),
        time.monotonic() - start,
    )
    return results
