"""One downloader: pooled connections, bounded retries, verified atomic writes, a ledger."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import itertools
import logging
import os
import random
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm
from urllib3.exceptions import HTTPError as Urllib3Error

from stages.executor import imap_unordered
from stages.http import HttpClient

log = logging.getLogger("stages.download")

# Statuses: ok; missing (404/410) and corrupt (bad bytes at the source) are permanent;
# failed is transient (connection errors, 429, 5xx, auth) and is retried by the next run.
PERMANENT = {"missing", "corrupt"}
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
MISSING_HTTP = {404, 410}
SMALL = 16 << 20  # bodies up to this size are read in one call


@dataclass(frozen=True)
class Config:
    """Downloader settings (the `fetch` section of params.yaml)."""

    workers: int = 16
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 5
    backoff: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 120.0
    verify_decode: bool = False
    retry_permanent: bool = False
    allow_transient_failures: bool = False
    keep_cache: bool = True

    @classmethod
    def from_params(cls, section: dict | None) -> Config:
        """Build from a params section, ignoring unknown keys."""
        section = section or {}
        return cls(**{k: v for k, v in section.items() if k in cls.__dataclass_fields__})


@dataclass
class Result:
    """The outcome for one URL."""

    url: str
    status: str
    reason: str = ""
    sha256: str | None = None
    bytes: int | None = None
    http_status: int | None = None
    attempts: int = 0

    @property
    def transient(self) -> bool:
        """Tell whether a later run should try again."""
        return self.status == "failed"


class Retry(Exception):
    """A transient failure; carries the server's Retry-After if any."""

    def __init__(self, reason: str, retry_after: float | None = None, http_status=None):
        super().__init__(reason)
        self.reason, self.retry_after, self.http_status = reason, retry_after, http_status


class Permanent(Exception):
    """A failure that retrying will not fix."""

    def __init__(self, status: str, reason: str, http_status=None):
        super().__init__(reason)
        self.status, self.reason, self.http_status = status, reason, http_status


def cache_root() -> Path:
    """Return the download cache directory ($DSREPO_CACHE_DIR, else ~/.cache/dsrepo)."""
    env = os.environ.get("DSREPO_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dsrepo"


def redact(url: str) -> str:
    """Drop the query string, which may hold a SAS token, from a URL for logs."""
    return url.split("?", 1)[0]


def parse_retry_after(value: str | None) -> float | None:
    """Parse Retry-After as seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def remove_orphan_parts(tmp: Path) -> None:
    """Delete part files left by killed runs (named <pid>-...; live processes keep theirs)."""
    for part in tmp.glob("*.part"):
        pid = part.name.split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            part.unlink(missing_ok=True)
        except PermissionError:
            pass  # another user's live process


def read_error(exc: Exception, size: int, expected: int | None) -> str:
    """Describe a failure while reading a body, without the URL (it may hold a token)."""
    text = f"{type(exc).__name__} {exc}"
    if "IncompleteRead" in text or "Connection broken" in text:
        return f"truncated body ({size} of {expected or '?'} bytes)"
    if "timed out" in text.lower() or "Timeout" in text:
        return f"read timeout after {size} bytes"
    return f"read error: {type(exc).__name__}"


def goog_md5(header: str | None) -> str | None:
    """Return the hex MD5 a GCS `x-goog-hash` header promises, if any."""
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "md5" and value:
            try:
                return base64.b64decode(value + "=" * (-len(value) % 4)).hex()
            except ValueError:
                return None
    return None


def check_structure(kind: str, head: bytes, tail: bytes) -> str | None:
    """Return why bytes are not a whole JPEG/PNG, or None if they look complete."""
    if kind == "jpeg":
        if not head.startswith(b"\xff\xd8"):
            return "not a JPEG (no SOI marker)"
        # Some cameras pad after EOI; the marker must still be there.
        if not tail.rstrip(b"\x00\r\n\x20\xff").endswith(b"\xff\xd9") and b"\xff\xd9" not in tail:
            return "truncated JPEG (no EOI marker)"
    elif kind == "png":
        if not head.startswith(b"\x89PNG\r\n\x1a\n"):
            return "not a PNG (bad signature)"
        if b"IEND" not in tail[-16:]:
            return "truncated PNG (no IEND chunk)"
    return None


def kind_of(url: str) -> str:
    """Guess the payload kind from the URL's extension."""
    path = redact(url).lower()
    if path.endswith((".jpg", ".jpeg")):
        return "jpeg"
    if path.endswith(".png"):
        return "png"
    return "any"


def decode_check(path: Path) -> str | None:
    """Fully decode an image; return the error, or None."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except Exception as exc:  # Pillow raises many types for bad data
        return f"undecodable image: {exc}"
    return None


class Ledger:
    """Per-URL outcomes that survive crashes (SQLite, WAL), so re-runs resume."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # Queued experiments may share the cache: wait for each other's writes.
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=120)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS results (url TEXT PRIMARY KEY, status TEXT, reason TEXT,"
            " sha256 TEXT, bytes INTEGER, http_status INTEGER, attempts INTEGER)"
        )
        self.lock = threading.Lock()

    def get(self, url: str) -> Result | None:
        """Return the recorded result for a URL."""
        with self.lock:
            row = self.db.execute(
                "SELECT url, status, reason, sha256, bytes, http_status, attempts"
                " FROM results WHERE url=?",
                (url,),
            ).fetchone()
        return Result(*row) if row else None

    def all(self) -> dict[str, Result]:
        """Return every recorded result, by URL."""
        with self.lock:
            rows = self.db.execute(
                "SELECT url, status, reason, sha256, bytes, http_status, attempts FROM results"
            ).fetchall()
        return {row[0]: Result(*row) for row in rows}

    def put(self, *results: Result) -> None:
        """Record results in one transaction."""
        rows = [
            (r.url, r.status, r.reason, r.sha256, r.bytes, r.http_status, r.attempts)
            for r in results
        ]
        with self.lock:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?)", rows)
            self.db.execute("COMMIT")

    def close(self) -> None:
        """Close the database."""
        self.db.close()


class Downloader:
    """Fetch URLs into a content-addressed cache with verification and retries."""

    def __init__(
        self,
        cfg: Config,
        cache_dir: Path | None = None,
        *,
        ledger_name: str = "ledger",
        url_suffix: str = "",
        headers: dict | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.cfg = cfg
        self.root = Path(cache_dir) if cache_dir else cache_root()
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.root / f"{ledger_name}.sqlite")
        # A secret (e.g. a SAS token) is appended at request time only: never stored or logged.
        self.url_suffix = url_suffix
        self.headers = {"User-Agent": "dsrepo/0.1", **(headers or {})}
        self.sleep = sleep
        self.http = HttpClient(cfg.connect_timeout, cfg.read_timeout, self.headers)
        for i in range(256):  # made once, not per file
            (self.objects / f"{i:02x}").mkdir(exist_ok=True)
        self._seq = itertools.count()
        remove_orphan_parts(self.tmp)
        self.objects_str, self.tmp_str = f"{self.objects}/", f"{self.tmp}/"

    def object_file(self, sha256: str) -> str:
        """Return where content with this hash lives in the cache (a plain string: hot path)."""
        return f"{self.objects_str}{sha256[:2]}/{sha256}"

    def object_path(self, sha256: str) -> Path:
        """Return where content with this hash lives in the cache."""
        return Path(self.object_file(sha256))

    def cached(self, url: str) -> Result | None:
        """Return a prior result that needs no new request, if any."""
        return self.reusable(self.ledger.get(url))

    def reusable(self, res: Result | None) -> Result | None:
        """Return a recorded result if it stands (object present, or a permanent failure)."""
        if res is None:
            return None
        if res.status == "ok":
            path = self.object_path(res.sha256)
            if path.is_file() and path.stat().st_size == res.bytes:
                return res
            return None
        if res.status in PERMANENT and not self.cfg.retry_permanent:
            return res
        return None

    def _attempt(self, url: str, kind: str) -> Result:
        """Make one request; raise Retry or Permanent on failure."""
        try:
            resp = self.http.get(url + self.url_suffix)
        except (OSError, Urllib3Error) as exc:
            what = "timeout" if "timed out" in str(exc).lower() else "error"
            raise Retry(f"connection {what}: {type(exc).__name__}") from None
        reusable = False
        try:
            status = resp.status
            if status != 200:
                resp.read(1 << 16)  # small error bodies: keep the connection alive
                reusable = True
                if status in MISSING_HTTP:
                    raise Permanent("missing", f"http {status}", status)
                retry_after = parse_retry_after(resp.header("Retry-After"))
                if status in TRANSIENT_HTTP or status >= 500:
                    raise Retry(f"http {status}", retry_after, status)
                # 401/403 and other 4xx: usually a wrong or missing token; a re-run may fix it.
                raise Permanent("failed", f"http {status}", status)
            res = self._receive(resp, url, kind)
            reusable = True
            return res
        except (OSError, Urllib3Error) as exc:
            raise Retry(f"read error: {type(exc).__name__}", None, resp.status) from None
        finally:
            resp.release(reusable)

    def _receive(self, resp, url: str, kind: str) -> Result:
        """Stream a 200 body to a part file, verify it, and move it into the cache."""
        expected = resp.header("Content-Length")
        expected = int(expected) if expected and expected.isdigit() else None
        tmp = f"{self.tmp_str}{os.getpid()}-{threading.get_ident()}-{next(self._seq)}.part"
        digest = hashlib.sha256()
        want_md5 = goog_md5(resp.header("x-goog-hash"))
        md5 = hashlib.md5() if want_md5 else None
        size, head, tail = 0, b"", b""
        try:
            try:
                with open(tmp, "wb", buffering=0) as fh:
                    # Small bodies (images) in one read; big ones (metadata) in 1 MiB chunks.
                    step = expected if expected is not None and expected <= SMALL else 1 << 20
                    while True:
                        chunk = resp.read(step) if step else b""
                        if not chunk:
                            break
                        if size < 16:
                            head = (head + chunk[:16])[:16]
                        tail = (tail + chunk[-64:])[-64:]
                        fh.write(chunk)
                        digest.update(chunk)
                        if md5 is not None:
                            md5.update(chunk)
                        size += len(chunk)
                        if size == expected:
                            break  # no extra read call for the end of the body
            except (Urllib3Error, OSError) as exc:
                raise Retry(read_error(exc, size, expected), None, 200) from None
            if expected is not None and size != expected:
                raise Retry(f"truncated body ({size} of {expected} bytes)", None, 200)
            if md5 is not None and md5.hexdigest() != want_md5:
                raise Retry("md5 does not match the server's x-goog-hash", None, 200)
            problem = check_structure(kind, head, tail)
            if problem is None and self.cfg.verify_decode and kind in ("jpeg", "png"):
                problem = decode_check(Path(tmp))
            if problem:
                if expected is None:
                    raise Retry(problem, None, 200)  # a cut transfer looks like a bad source
                raise Permanent("corrupt", problem, 200)
            sha = digest.hexdigest()
            # Atomic: nothing unverified ever lands. Plain strings: this runs per file.
            os.replace(tmp, self.object_file(sha))
            tmp = None
            return Result(url, "ok", "", sha, size, 200)
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Return the delay before the next attempt: Retry-After, else exponential + jitter."""
        if retry_after is not None:
            return min(retry_after, self.cfg.retry_after_max)
        base = min(self.cfg.backoff_max, self.cfg.backoff * (2**attempt))
        return base * (0.5 + random.random() / 2)

    def fetch(self, url: str, kind: str | None = None, *, refresh: bool = False) -> Result:
        """Download one URL with bounded retries; record and return the outcome."""
        prior = None if refresh else self.cached(url)
        if prior is not None:
            return prior
        res = self.download(url, kind)
        self.ledger.put(res)
        return res

    def download(self, url: str, kind: str | None = None) -> Result:
        """Download one URL with bounded retries, without consulting or writing the ledger."""
        kind = kind or kind_of(url)
        attempts = 0
        while True:
            attempts += 1
            try:
                res = self._attempt(url, kind)
            except Permanent as exc:
                res = Result(url, exc.status, exc.reason, None, None, exc.http_status)
            except Retry as exc:
                if attempts <= self.cfg.retries:
                    delay = self.backoff(attempts - 1, exc.retry_after)
                    log.debug("retry %s in %.2fs: %s", redact(url), delay, exc.reason)
                    self.sleep(delay)
                    continue
                res = Result(url, "failed", exc.reason, None, None, exc.http_status)
            res.attempts = attempts
            return res

    def fetch_all(self, urls: Iterable[str], *, desc: str = "fetch") -> dict[str, Result]:
        """Download many URLs concurrently; show items/s and MB/s on a TTY."""
        urls = sorted(set(urls))
        results: dict[str, Result] = {}
        bar = tqdm(
            total=len(urls),
            desc=desc,
            unit="item",
            disable=not sys.stderr.isatty(),
            dynamic_ncols=True,
            smoothing=0.1,
        )
        start, nbytes = time.monotonic(), 0
        todo = []
        recorded = self.ledger.all()
        for url in urls:
            prior = self.reusable(recorded.get(url))
            if prior is not None:
                results[url] = prior
                bar.update(1)
            else:
                todo.append(url)
        # Workers only download; this thread records results in batches (one transaction
        # each), so a crash loses at most one batch of records, never a verified object.
        batch, flushed = [], time.monotonic()
        for res in imap_unordered(self.download, todo, workers=max(1, self.cfg.workers)):
            results[res.url] = res
            batch.append(res)
            if len(batch) >= 256 or time.monotonic() - flushed > 1.0:
                self.ledger.put(*batch)
                batch, flushed = [], time.monotonic()
            nbytes += res.bytes or 0
            if not bar.disable:
                bar.update(1)
                elapsed = max(time.monotonic() - start, 1e-9)
                bar.set_postfix_str(f"{nbytes / elapsed / 1e6:.1f} MB/s", refresh=False)
        if batch:
            self.ledger.put(*batch)
        bar.close()
        elapsed = time.monotonic() - start
        counts: dict[str, int] = {}
        for res in results.values():
            counts[res.status] = counts.get(res.status, 0) + 1
        log.info(
            "%s: %d items (%s), %d new downloads, %.1f MB in %.1fs (%.1f items/s, %.1f MB/s)",
            desc,
            len(urls),
            ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
            len(todo),
            nbytes / 1e6,
            elapsed,
            len(todo) / max(elapsed, 1e-9),
            nbytes / 1e6 / max(elapsed, 1e-9),
        )
        return results

    def close(self) -> None:
        """Release connections and the ledger."""
        self.http.close()
        self.ledger.close()
