"""One downloader: pooled libcurl transfers, bounded retries, verified atomic writes, a ledger."""

from __future__ import annotations

import functools
import hashlib
import heapq
import itertools
import logging
import os
import queue
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from stages.core.config import FetchConf
from stages.core.errors import StageError
from stages.core.executor import Executor
from stages.core.files import cache_root
from stages.core.origins import origin_of, redact
from stages.core.parallel import progress
from stages.net.batches import WorkerSpec, download_batch, lost_batch
from stages.net.cache import ObjectCache, PartFile
from stages.net.credentials import Credentials
from stages.net.ledger import PERMANENT, Ledger, Result
from stages.net.retry import Action, Policy, SessionBlocked, Transient
from stages.net.transport import Exchange, Options, Transport
from stages.net.verify import check_structure, decode_check, goog_md5, kind_of

log = logging.getLogger("stages.net.download")

MISSING_HTTP = {404, 410}
REDIRECT_HTTP = {301, 302, 303, 307, 308}
LEDGER_BATCH = 256
LOOKUPS = 4096  # up to this many URLs are looked up one by one; more, in one scan
COMMIT_THREADS = 2


class Retry(Transient):
    """A transient failure; carries the wait the server named, if any."""

    def __init__(self, reason: str, retry_after: float | None = None, http_status=None):
        super().__init__(reason, retry_after)
        self.http_status = http_status


class Final(Exception):
    """An outcome retrying within this run will not change (missing, corrupt, or a refusal)."""

    def __init__(self, status: str, reason: str, http_status=None):
        super().__init__(reason)
        self.status, self.reason, self.http_status = status, reason, http_status


class CredentialRejected(SessionBlocked):
    """A credentialed origin answered 401/403: every later request would fail the same way."""


@dataclass(eq=False)
class _Job:
    """One URL's way through attempts and redirects."""

    url: str
    kind: str
    max_bytes: int
    deadline: float
    target: str = field(default="", repr=False)  # the current hop
    attempts: int = 0
    hops: int = 0
    started: float = 0.0  # when the current attempt began: its hops share one deadline
    first: float = 0.0  # when the first attempt began, on the downloader's clock


class Downloader:
    """Fetch URLs into a content-addressed cache with verification, retries and a ledger."""

    def __init__(
        self,
        cfg: FetchConf,
        cache_dir: Path | None = None,
        *,
        ledger_name: str | None = "ledger",
        credentials: Credentials | None = None,
        throttled: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        executor: Executor,
        worker_credentials: Callable[[], Credentials] | None = None,
    ):
        self.cfg = cfg
        # A 400 whose body matches is a throttle (Tator): retried, after the seconds it names.
        self.throttled_text = throttled
        self.policy = Policy.from_conf(cfg, throttled=throttled)
        self.cache = ObjectCache(Path(cache_dir) if cache_dir else cache_root())
        self.root = self.cache.root
        # Only the driver records outcomes (workers return them): None on a worker.
        self.ledger = Ledger(self.root / f"{ledger_name}.sqlite") if ledger_name else None
        # Where transfers run: this process's transfer loop, or the executor's tasks.
        self.executor = executor
        # How a worker builds this run's credentials from its own environment (secrets never
        # travel with the tasks).
        self.worker_credentials = worker_credentials
        # Secrets are attached per request to their own origins: never stored or logged.
        self.creds = credentials or Credentials()
        self.clock, self.sleep = clock, sleep
        self.transport = Transport(
            Options(
                connect_timeout=cfg.connect_timeout,
                low_speed_limit=cfg.low_speed_limit,
                low_speed_time=cfg.low_speed_time,
                max_connections=max(1, cfg.workers),
            )
        )
        self._seq = itertools.count()
        # Hashing and writing verified bodies happen off the transfer thread (both release the
        # GIL), so libcurl keeps receiving while the last bodies land in the cache.
        self.committer = ThreadPoolExecutor(COMMIT_THREADS, thread_name_prefix="commit")

    def reusable(self, res: Result | None) -> Result | None:
        """Return a recorded result if it stands (object present, or a permanent failure)."""
        if res is None:
            return None
        if res.status == "ok":
            if self.cfg.refresh:
                return None  # the user asked for upstream as it is now
            path = self.cache.object_path(res.sha256)
            if path.is_file() and path.stat().st_size == res.bytes:
                return res
            return None
        if res.status in PERMANENT and not self.cfg.retry_permanent:
            return res
        return None

    def standing(self, urls: Iterable[str]) -> dict[str, Result]:
        """Return the recorded outcomes that stand for these URLs (the rest need fetching)."""
        urls = list(urls)
        if len(urls) <= LOOKUPS:
            recorded = {u: r for u in urls if (r := self.ledger.get(u)) is not None}
        else:
            recorded = self.ledger.all()
        return {u: r for u in urls if (r := self.reusable(recorded.get(u))) is not None}

    def record(self, *results: Result) -> None:
        """Record outcomes in the ledger (one transaction)."""
        self.ledger.put(*results)

    def fetch(
        self,
        url: str,
        kind: str | None = None,
        *,
        refresh: bool = False,
        max_bytes: int | None = None,
        deadline: float | None = None,
    ) -> Result:
        """Download one URL with bounded retries; record and return the outcome."""
        if not refresh:
            prior = self.reusable(self.ledger.get(url))
            if prior is not None:
                return prior
        job = self._job(url, kind, max_bytes, deadline)
        results = []
        try:
            self._run([job], results.append)
        finally:
            if results:
                self.ledger.put(*results)
        return results[0]

    def fetch_all(
        self,
        urls: Iterable[str],
        *,
        desc: str = "fetch",
        max_bytes: int | None = None,
        kind: str | None = None,
    ) -> dict[str, Result]:
        """Download many URLs concurrently; show items/s and MB/s on a TTY."""
        urls = sorted(set(urls))
        results = self.standing(urls)
        todo = [u for u in urls if u not in results]
        bar = progress(total=len(urls), initial=len(results), desc=desc, unit="item")
        start, nbytes = time.monotonic(), 0
        # Results are recorded in batches (one transaction each); the finally below writes the
        # last batch even on Ctrl-C or a fatal error, so finished downloads are never redone.
        batch: list[Result] = []
        flushed = time.monotonic()

        def done(res: Result) -> None:
            nonlocal flushed, nbytes, batch
            results[res.url] = res
            batch.append(res)
            nbytes += res.bytes or 0
            if len(batch) >= LEDGER_BATCH or time.monotonic() - flushed > 1.0:
                self.ledger.put(*batch)
                batch, flushed = [], time.monotonic()
            if not bar.disable:
                bar.update(1)
                elapsed = max(time.monotonic() - start, 1e-9)
                bar.set_postfix_str(f"{nbytes / elapsed / 1e6:.1f} MB/s", refresh=False)

        def here(todo: list[str], report: Callable[[Result], None]) -> None:
            self.transfer(todo, kind, max_bytes, report)

        def make_task() -> Callable[[tuple[str, ...]], list[Result]]:
            return functools.partial(download_batch, self.worker_spec(), kind, max_bytes)

        try:
            # Here, one transfer loop takes every URL; on a cluster, batches of URLs are tasks.
            self.executor.run_batches(todo, here, make_task, lost_batch, done)
        finally:
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

    def worker_spec(self) -> WorkerSpec:
        """Return how a Dask worker rebuilds this downloader (no secrets, no ledger)."""
        if self.creds and self.worker_credentials is None:
            raise StageError("this source's credentials cannot be rebuilt on Dask workers")
        return WorkerSpec(
            type(self),
            self.cfg,
            str(self.root),
            self.throttled_text,
            self.worker_credentials,
            tuple(sorted(c.label for c in self.creds.creds)),
        )

    def transfer(
        self,
        urls: Iterable[str],
        kind: str | None,
        max_bytes: int | None,
        done: Callable[[Result], None],
    ) -> None:
        """Download URLs in this process, passing each outcome to done (it records them)."""
        self._run([self._job(url, kind, max_bytes, None) for url in urls], done)

    def forget(self, url: str) -> None:
        """Drop a URL's recorded result, so the next fetch downloads it again."""
        self.ledger.forget(url)

    def close(self) -> None:
        """Release connections, the commit threads and the ledger."""
        self.transport.close()
        self.committer.shutdown(wait=True)
        if self.ledger is not None:
            self.ledger.close()

    def _job(self, url: str, kind: str | None, max_bytes: int | None, deadline: float | None):
        return _Job(
            url,
            kind or kind_of(url),
            int(max_bytes or self.cfg.max_item_bytes),
            float(deadline or self.policy.attempt_timeout),
            target=url,
        )

    def _run(self, jobs: list[_Job], done: Callable[[Result], None]) -> None:
        """Drive every job to a result; at most `workers` requests in flight."""
        ready: deque[_Job] = deque(jobs)
        waiting: list[tuple[float, int, _Job]] = []  # (due, seq, job): retries after backoff
        finished: list[Exchange] = []
        committed: queue.SimpleQueue = queue.SimpleQueue()  # (job, Result or exception)
        transport = self.transport
        workers = max(1, self.cfg.workers)
        in_commit = 0

        def settle(job: _Job, outcome: Callable[[], Result | None]) -> None:
            """Record a job's outcome, or schedule its next hop or retry."""
            try:
                res = outcome()
            except _Redirect as red:
                job.target, job.hops = red.url, job.hops + 1
                ready.appendleft(job)
                return
            except Retry as exc:
                delay = self.policy.next_wait(job.attempts, exc.wait, self.clock() - job.first)
                if delay is not None:
                    log.debug("retry %s in %.2fs: %s", redact(job.url), delay, exc.reason)
                    job.target, job.hops = job.url, 0
                    heapq.heappush(waiting, (self.clock() + delay, next(self._seq), job))
                    return
                res = Result(job.url, "failed", exc.reason, None, None, exc.http_status)
            except Final as exc:
                res = Result(job.url, exc.status, exc.reason, None, None, exc.http_status)
            if res is not None:  # None: handed to a commit thread
                res.attempts = job.attempts
                done(res)

        def conclude(ex: Exchange) -> None:
            nonlocal in_commit
            self._check(ex.tag, ex)  # raises for every outcome but a body to commit
            in_commit += 1
            self.committer.submit(self._commit, ex.tag, ex, ex.sink, committed)

        def collect(block: bool) -> None:
            nonlocal in_commit
            while in_commit:
                try:
                    job, out = committed.get(timeout=0.5) if block else committed.get_nowait()
                except queue.Empty:
                    return
                in_commit -= 1
                block = False
                settle(job, lambda out=out: _unwrap(out))

        try:
            while ready or waiting or transport.active or in_commit:
                now = self.clock()
                while waiting and waiting[0][0] <= now:
                    ready.append(heapq.heappop(waiting)[2])
                # Bodies waiting for a commit thread hold memory: bound them too.
                while ready and transport.active < workers and in_commit < 4 * workers:
                    self._start(ready.popleft())
                if transport.active:
                    timeout = 0.5 if not waiting else min(0.5, max(0.0, waiting[0][0] - now))
                    finished = transport.poll(timeout)
                elif in_commit:
                    collect(block=True)
                elif waiting:
                    self.sleep(max(0.0, waiting[0][0] - now))
                while finished:
                    ex = finished.pop()
                    settle(ex.tag, lambda ex=ex: conclude(ex))
                collect(block=False)
        finally:
            for ex in [*finished, *transport.abort()]:
                ex.sink.discard()
            # Bodies already with a commit thread land quickly: keep what landed.
            while in_commit:
                job, out = committed.get()
                in_commit -= 1
                if isinstance(out, Result):
                    out.attempts = job.attempts
                    done(out)

    def _start(self, job: _Job) -> None:
        """Send the next request of a job, with the credentials of its current origin only."""
        if job.hops == 0:
            if not job.attempts:
                job.first = self.clock()
            job.attempts += 1
            job.started = time.monotonic()
        part = PartFile(self.cache.part_file())
        url, headers = self.creds.apply(job.target)
        # Ask for the bytes as stored: a content coding would defeat the length and md5 checks.
        headers.append("Accept-Encoding: identity")
        # The hops of one attempt share its deadline.
        left = max(0.001, job.deadline - (time.monotonic() - job.started))
        ex = Exchange(url, headers, job.max_bytes, left, part, job)
        self.transport.start(ex)

    def _check(self, job: _Job, ex: Exchange) -> None:
        """Return if a finished exchange's body should be committed, else raise Retry /
        Final / _Redirect (or CredentialRejected, which stops the run)."""
        part: PartFile = ex.sink
        committed = False
        try:
            status = ex.status
            verdict = None
            if status != 200:
                labels = self.creds.scoped(job.target) if status in (401, 403) else []
                verdict = self.policy.judge(
                    status, ex.header("Retry-After"), ex.error_head, credentialed=bool(labels)
                )
                if verdict.action is Action.STOP:
                    scheme, host, port = origin_of(job.target)
                    where = f"{scheme}://{host}:{port}"
                    if labels:
                        raise CredentialRejected(
                            f"{where} answered http {status} to the credential from "
                            f"{', '.join(labels)}: check that secret and the origins it is "
                            "scoped to"
                        )
                    raise SessionBlocked(f"{where} answered http {status}: this session is blocked")
            if ex.error is not None:
                if ex.retryable:
                    raise Retry(ex.error, None, status or None)
                raise Final("failed", ex.error, status or None)
            if status == 200:
                self._check_headers(ex, part)
                committed = True
                return
            if status in REDIRECT_HTTP:
                raise _Redirect(self._next_hop(job, ex))
            if status in MISSING_HTTP:
                raise Final("missing", f"http {status}", status)
            if verdict.action is Action.RETRY:
                if status == 202:  # accepted, not ready (a report being generated)
                    raise Retry("http 202 (not ready)", verdict.wait, status)
                reason = "throttled (http 400)" if verdict.throttled else f"http {status}"
                raise Retry(reason, verdict.wait, status)
            # 401/403 without a credential of ours, 204, 304, other 4xx: a re-run may fix it.
            raise Final("failed", f"http {status}", status)
        finally:
            if not committed:
                part.discard()

    def _next_hop(self, job: _Job, ex: Exchange) -> str:
        """Check a redirect and return where it points."""
        if job.hops >= self.cfg.max_redirects:
            raise Final("failed", "too many redirects", ex.status)
        target = ex.redirect_url
        if not target:
            raise Final("failed", f"http {ex.status} without a usable Location", ex.status)
        try:
            scheme, _, _ = origin_of(target)
        except ValueError:
            parts = urlsplit(target)
            what = parts.scheme or "relative"
            if parts.scheme in ("http", "https"):
                raise Final("failed", "redirect to an invalid URL", ex.status) from None
            raise Final("failed", f"redirect to a {what} URL refused", ex.status) from None
        if scheme == "http" and urlsplit(job.target).scheme == "https":
            raise Final("failed", "redirect from https to http refused", ex.status)
        return target

    @staticmethod
    def _check_headers(ex: Exchange, part: PartFile) -> None:
        """Refuse a 200 whose headers contradict its body or what was asked for."""
        encoding = (ex.header("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise Final("failed", "unrequested content-encoding", 200)
        if len(set(ex.header_values("Content-Length"))) > 1:
            raise Retry("conflicting Content-Length headers", None, 200)
        if ex.content_length is not None and part.size != ex.content_length:
            raise Retry("truncated body", None, 200)

    def _commit(self, job: _Job, ex: Exchange, part: PartFile, out: queue.SimpleQueue) -> None:
        """Verify a 200 body and move it into the cache (commit thread); report to `out`."""
        try:
            result: Result | BaseException = self._verify_and_store(job, ex, part)
        except OSError:
            result = Retry("cache write failed", None, 200)
        except BaseException as exc:  # Retry / Final, or a bug: the loop re-raises it
            result = exc
        finally:
            part.discard()
        out.put((job, result))

    def _verify_and_store(self, job: _Job, ex: Exchange, part: PartFile) -> Result:
        want_md5 = goog_md5(ex.header("x-goog-hash"))
        if part.fh is None:
            data = b"".join(part.chunks)
            part.chunks = []
            head, tail = data[:16], data[-64:]
            sha = hashlib.sha256(data).hexdigest()
            md5 = hashlib.md5(data).hexdigest() if want_md5 else None
        else:
            part.fh.close()
            part.fh = None
            data, head, tail = None, part.head, part.tail
            sha, md5 = part.sha.hexdigest(), part.md5.hexdigest()
        if want_md5 and md5 != want_md5:
            raise Retry("md5 does not match the server's x-goog-hash", None, 200)
        problem = check_structure(job.kind, head, tail)
        if problem is None and self.cfg.verify_decode and job.kind in ("jpeg", "png"):
            problem = decode_check(data if data is not None else part.path)
        if problem:
            if ex.content_length is None:
                raise Retry(problem, None, 200)  # a cut transfer looks like a bad source
            raise Final("corrupt", problem, 200)
        if data is not None:
            with open(part.path, "wb") as fh:
                fh.write(data)
        # Atomic: nothing unverified ever lands. Plain strings: this runs per file.
        os.replace(part.path, self.cache.object_file(sha))
        part.path = None
        return Result(job.url, "ok", "", sha, part.size, 200)


def _unwrap(out: Result | BaseException) -> Result:
    """Return a commit's result, or raise what it raised."""
    if isinstance(out, BaseException):
        raise out
    return out


class _Redirect(Exception):
    """A verified redirect: send the job's next request to `url`."""

    def __init__(self, url: str):
        super().__init__("redirect")
        self.url = url
