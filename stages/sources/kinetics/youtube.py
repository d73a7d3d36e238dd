"""Clip sections with yt-dlp's Python API, recorded in the shared ledger and object cache.

yt-dlp cuts a section by running `ffmpeg -ss S -t D -i <media URL> -c copy`, which reads only
the byte ranges it needs; it finds ffmpeg on PATH only (its `ffmpeg_location` option does not
reach section downloads), so the executable imageio-ffmpeg ships is linked into a directory
put first on PATH.

Each attempt runs in a child process that leads its own process group (yt-dlp, its ffmpeg,
the check of the result): the attempt's deadline kills the whole group, whatever phase it is
in, and a crash in a codec is that clip's failure, never the stage's.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core.errors import StageError
from stages.core.files import sha256_file
from stages.core.parallel import pmap, progress
from stages.core.store import Row
from stages.net.batches import WORKER_DIED, WorkerSpec
from stages.net.ledger import Result
from stages.net.retry import Action, Transient
from stages.sources import Context

log = logging.getLogger("stages.sources.kinetics")

# yt-dlp's messages for videos that are gone for good (removed, private, blocked, 404/410).
PERMANENT = re.compile(
    r"HTTP Error (404|410)|Video unavailable|[Pp]rivate video|video is private|removed by|"
    r"does not exist|[Ss]ign in to confirm your age|account .* terminated|copyright|"
    r"not available in your country|This video has been removed|Unsupported URL|"
    r"Requested format is not available|members-only|Join this channel",
)
HTTP_STATUS = re.compile(r"HTTP Error (\d{3})")
# Reasons that mean the bytes the source sends are unusable: after every retry, permanent.
BAD_CLIP = ("no output file", "no video stream", "no video packets", "unreadable clip")
POLL = 0.5  # seconds between checks for Ctrl-C while an attempt runs

_stop = threading.Event()  # set when the stage is interrupted: running attempts are killed


def ffmpeg_dir(cache_root: Path) -> Path:
    """Return a directory holding `ffmpeg`: imageio-ffmpeg's executable, linked."""
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
    return bindir


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
    gone = PERMANENT.search(text)
    if gone:
        return "missing", f"unavailable: {f'HTTP {code}' if code else gone.group(0)}", code
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
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                return "no video stream"
            for packet in container.demux(container.streams.video[0]):
                if packet.size:
                    return None
    except Exception as exc:  # PyAV raises many types for hostile files
        return f"unreadable clip: {type(exc).__name__}"
    return "no video packets"


@dataclass(frozen=True)
class Job:
    """One attempt's inputs (picklable: it crosses into the child process)."""

    url: str
    start: float
    end: float
    work: str
    bindir: str
    format: str
    socket_timeout: float
    max_bytes: int


@dataclass(frozen=True)
class Outcome:
    """What the child reports: a status and reason, and the clip's file when ok."""

    status: str
    reason: str = ""
    http_status: int | None = None
    path: str | None = None
    sha256: str | None = None


def run_attempt(job: Job) -> Outcome:
    """Download, check and hash one section (runs in the attempt's child process)."""
    from yt_dlp import YoutubeDL
    from yt_dlp.utils import DownloadError, download_range_func

    os.environ["PATH"] = f"{job.bindir}{os.pathsep}{os.environ.get('PATH', '')}"
    work = Path(job.work)
    logger = _Log()
    opts = {
        "outtmpl": {"default": str(work / "clip.%(ext)s")},
        "format": job.format,
        "download_ranges": download_range_func(None, [(job.start, job.end)]),
        "logger": logger,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "noplaylist": True,
        "cachedir": False,
        "socket_timeout": job.socket_timeout,
        "retries": 0,  # attempts, backoff and the ledger are ours
        "fragment_retries": 0,
        "extractor_retries": 0,
        "max_filesize": job.max_bytes,
        # ffmpeg reads the section: a silent server fails the read, a huge section hits -fs.
        "external_downloader_args": {
            "ffmpeg_i": ["-rw_timeout", str(int(job.socket_timeout * 1e6))],
            "ffmpeg_o": ["-fs", str(job.max_bytes)],
        },
        "color": {"stderr": "no_color", "stdout": "no_color"},
    }
    try:
        with YoutubeDL(opts) as ydl:
            code = ydl.download([job.url])
    except DownloadError as exc:
        return Outcome(*classify(str(exc)))
    if code:
        return Outcome(*classify(" ".join(logger.errors)))
    outs = sorted(p for p in work.iterdir() if p.is_file() and p.name.startswith("clip."))
    outs = [p for p in outs if not p.name.endswith((".part", ".ytdl"))]
    if not outs:
        return Outcome("failed", "no output file")
    out = outs[0]
    if out.stat().st_size > job.max_bytes:
        return Outcome("corrupt", f"clip larger than {job.max_bytes} bytes")
    why = check_clip(out)
    if why:
        return Outcome("failed", why)
    return Outcome("ok", path=str(out), sha256=sha256_file(out))


def _child(job: Job, conn) -> None:
    """Lead a new process group (so the deadline kills ffmpeg too) and run one attempt."""
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when an attempt ends
    try:
        outcome = run_attempt(job)
    except BaseException as exc:  # anything yt-dlp raises on a hostile reply: this clip's
        outcome = Outcome("failed", f"yt-dlp error: {type(exc).__name__}")
    conn.send(outcome)
    conn.close()


_context = None


def mp_context():
    """Return the forkserver context, yt-dlp preloaded (a fork of a threaded parent is unsafe)."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(["yt_dlp", "av", "stages.sources.kinetics.youtube"])
    return _context


def _kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()  # not yet its own group leader
    proc.join(10)


def attempt(row: Row, cfg, ctx: Context, bindir: Path) -> Result:
    """Run one attempt in a child process under the attempt deadline; return the outcome."""
    f = cfg.fetch
    work = ctx.work_path()
    work.mkdir()
    job = Job(
        url=row.url.split("#", 1)[0],
        start=row.meta["time_start"],
        end=row.meta["time_end"],
        work=str(work),
        bindir=str(bindir),
        format=f.format,
        socket_timeout=f.socket_timeout,
        max_bytes=f.max_clip_bytes,
    )
    mp = mp_context()
    recv, send = mp.Pipe(duplex=False)
    proc = mp.Process(target=_child, args=(job, send), daemon=True)
    try:
        proc.start()
        send.close()
        deadline = time.monotonic() + ctx.policy.attempt_timeout
        outcome = None
        while outcome is None:
            if _stop.is_set():
                return Result(row.url, "failed", "interrupted")
            left = deadline - time.monotonic()
            if left <= 0:
                return Result(row.url, "failed", "attempt deadline exceeded")
            if recv.poll(min(POLL, left)):
                try:
                    outcome = recv.recv()
                except EOFError:  # the child died without a word (a crash in a codec)
                    return Result(row.url, "failed", "downloader process died")
        if outcome.status != "ok":
            return Result(row.url, outcome.status, outcome.reason, http_status=outcome.http_status)
        sha, size = ctx.adopt(Path(outcome.path), outcome.sha256)
        return Result(row.url, "ok", "", sha, size)
    finally:
        if proc.is_alive():
            _kill_group(proc)
        recv.close()
        shutil.rmtree(work, ignore_errors=True)


def fetch_clip(row: Row, cfg, ctx: Context, bindir: Path) -> Result:
    """Download one clip, retrying transient failures as the downloader's policy says."""
    tries = 0

    def once() -> Result:
        nonlocal tries
        tries += 1
        res = attempt(row, cfg, ctx, bindir)
        res.attempts = tries
        # yt-dlp's own retries are off: a failure without an HTTP status (a timeout, a cut
        # transfer, an unusable clip) or with a transient one is tried again here.
        if res.status == "failed" and not _stop.is_set():
            if ctx.policy.judge(res.http_status).action is Action.RETRY:
                raise Transient(res.reason, None, res)
        return res

    try:
        return ctx.retry(once)
    except Transient as exc:
        res = exc.outcome
        if res.reason.startswith(BAD_CLIP):
            res.status = "corrupt"  # the source keeps sending unusable bytes
        return res


@dataclass(frozen=True)
class ClipJob:
    """What a Dask worker needs to fetch clips (into the shared cache; the driver records)."""

    spec: WorkerSpec
    cfg: Any
    bindir: str
    source_name: str


def clip_batch(job: ClipJob, rows: tuple[Row, ...]) -> list[Result]:
    """Fetch clips on a worker; return their outcomes (small)."""
    if multiprocessing.current_process().daemon:  # each attempt runs in a child process
        raise StageError(
            "Dask workers run as daemon processes, which cannot start yt-dlp's child process: "
            "start them with DASK_DISTRIBUTED__WORKER__DAEMON=False (README: Scale out)"
        )
    ctx = Context.on_worker(job.spec, job.source_name)
    return [fetch_clip(row, job.cfg, ctx, Path(job.bindir)) for row in rows]


def lost_clips(rows: tuple[Row, ...]) -> list[Result]:
    """Return the outcomes of clips whose task kept killing its worker (retried next run)."""
    return [Result(row.url, "failed", WORKER_DIED) for row in rows]


def download(cfg, rows: list[Row], ctx: Context) -> dict[str, Result]:
    """Fetch pending clips (reusing the ledger's outcomes); return results by row URL."""
    bindir = ffmpeg_dir(ctx.cache_dir)
    results = ctx.standing(r.url for r in rows)
    todo = sorted((r for r in rows if r.url not in results), key=lambda r: r.url)
    bar = progress(
        total=len(rows), initial=len(results), desc=f"fetch@{ctx.source_name}", unit="clip"
    )
    start = time.monotonic()
    workers = cfg.fetch.clip_workers
    _stop.clear()

    def here(clips: list[Row], report: Callable[[Result], None]) -> None:
        fetched = pmap(
            lambda r: fetch_clip(r, cfg, ctx, bindir),
            clips,
            workers=workers,
            window=2 * workers,
            on_abort=_stop.set,
        )
        for res in fetched:
            report(res)

    def make_task() -> Callable[[tuple[Row, ...]], list[Result]]:
        return functools.partial(
            clip_batch, ClipJob(ctx.worker_spec(), cfg, str(bindir), ctx.source_name)
        )

    def done(res: Result) -> None:
        ctx.record(res)  # at once: a killed run keeps every finished clip
        results[res.url] = res
        bar.update(1)

    try:
        # On a cluster each clip is a task of its own: a clip's attempts are long work.
        ctx.executor.run_batches(todo, here, make_task, lost_clips, done, per_task=1)
    except BaseException:
        _stop.set()  # running attempts end within POLL seconds; queued ones are dropped
        raise
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
