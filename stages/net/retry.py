"""The one retry policy: which answers are transient, how long to wait, when to stop trying.

Every caller that retries asks the same `Policy`, built from conf/fetch by `Policy.from_conf`:
the downloader (libcurl transfers), the Tator API client (metadata, and the import's calls),
yt-dlp's clip attempts and the import's uploads.

- `judge(status, retry_after, body)` tells what an answer means: RETRY (with the wait the
  server named, if any), FAIL (this item's outcome for the run) or STOP (the stage's: a refused
  credential or a blocked session, which every later request would meet too; callers raise a
  `SessionBlocked` error for it).
- `delay(retry, wait)` is the wait before a retry: the server's wait capped by
  `retry_after_max`, else a backoff doubling from `backoff`, capped by `backoff_max`, with
  jitter (from `rng`: seed it for repeatable waits).
- `next_wait(attempts, wait, elapsed)` adds the bounds: at most `retries` extra attempts, none
  starting past the overall `deadline`. Each attempt has its own deadline, `attempt_timeout`,
  which the caller's transport enforces.
- `run(attempt)` is the whole loop, for callers that wait in their own thread.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from stages.core.config import FetchConf
from stages.core.errors import StageError

log = logging.getLogger("stages.net.retry")
T = TypeVar("T")

# Answers a later attempt may turn into success, for every service:
# - 202: accepted, not ready yet (a report still being generated): ask again;
# - 408 (request timeout), 425 (too early), 429 (too many requests): come back later;
# - every 5xx: object stores and CDNs (GCS, S3, Azure, Cloudflare's 52x) answer overload and
#   restarts with 500/502/503/504 and kin, and Tator answers 500 for a failure inside a view.
# Not retried: 400 (unless the service words a throttle in its body: `throttled`), 401, 403,
# 404, 410 and the other 4xx, which a new attempt would get again.
RETRYABLE_STATUS = frozenset({202, 408, 425, 429, *range(500, 600)})
REFUSED = frozenset({401, 403})  # a credential refused: the whole session's answer
MAX_DOUBLINGS = 64  # past this the backoff is at its cap anyway; 2**n stays a float


class SessionBlocked(StageError):
    """Raise when a service refuses the whole session (a credential, a blocked client): every
    later request would fail the same way, so the stage stops."""


class Transient(Exception):
    """Raise from an attempt for a failure another attempt may fix (`wait`: the server's)."""

    def __init__(self, reason: str, wait: float | None = None, outcome: Any = None):
        super().__init__(reason)
        self.reason, self.wait, self.outcome = reason, wait, outcome
        self.attempts = 0  # set by Policy.run when it gives up


class Action(Enum):
    """What to do about an answer."""

    RETRY = "retry"  # another attempt may succeed
    FAIL = "fail"  # this item's outcome for the run
    STOP = "stop"  # the stage's outcome: every later request would meet the same refusal


@dataclass(frozen=True)
class Verdict:
    """An answer judged: the action, and the wait the server named (seconds, uncapped)."""

    action: Action
    wait: float | None = None
    throttled: bool = False  # a throttle worded in a 400's body rather than a status


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Parse Retry-After as ASCII delta-seconds or an HTTP date; None if it is neither."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    try:
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    except (OverflowError, ValueError, OSError):
        return None


@dataclass(frozen=True)
class Policy:
    """How one service's calls are retried: bounds, waits and what its answers mean."""

    retries: int  # extra attempts after the first
    backoff: float  # the first backoff, in seconds; it doubles each retry
    backoff_max: float  # cap on one backoff
    retry_after_max: float  # cap on a wait the server names
    attempt_timeout: float  # deadline of one attempt, enforced by the caller's transport
    deadline: float | None = None  # seconds from the first attempt: none starts past it
    # A 400 whose body matches is a throttle (group 1: the seconds it names, else 1 s):
    # Tator's views answer DRF's throttle with a 400 saying "Request was throttled".
    throttled: re.Pattern[str] | None = None
    # A body that matches means the session is blocked, whatever the status: STOP.
    blocked: re.Pattern[str] | None = None
    # A per-origin request rate limit plugs in here: the seconds a request to an origin must
    # wait before it is sent (a token bucket's). None: no limit. No sender consults it yet;
    # the places are Downloader._start and the Tator session's BoundedAdapter.send.
    pace: Callable[[str], float] | None = field(default=None, compare=False)
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    @classmethod
    def from_conf(
        cls,
        cfg: FetchConf,
        *,
        throttled: str | None = None,
        blocked: str | None = None,
        rng: random.Random | None = None,
    ) -> Policy:
        """Return the policy conf/fetch describes, with a service's throttle and block texts."""
        return cls(
            retries=cfg.retries,
            backoff=cfg.backoff,
            backoff_max=cfg.backoff_max,
            retry_after_max=cfg.retry_after_max,
            attempt_timeout=cfg.attempt_timeout,
            throttled=re.compile(throttled) if throttled else None,
            blocked=re.compile(blocked) if blocked else None,
            rng=rng or random.Random(),
        )

    def judge(
        self,
        status: int | None,
        retry_after: str | None = None,
        body: str | bytes = "",
        *,
        credentialed: bool = False,
    ) -> Verdict:
        """Return what to do about an answer: its status (None: no answer, the transfer
        broke), Retry-After header and body (the start is enough); `credentialed`: it
        answered a credential of ours."""
        text = None
        if self.blocked is not None or (status == 400 and self.throttled is not None):
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        if (credentialed and status in REFUSED) or (
            self.blocked is not None and self.blocked.search(text)
        ):
            return Verdict(Action.STOP)
        if status == 400 and self.throttled is not None:
            found = self.throttled.search(text)
            if found is not None:
                named = found.group(1) if self.throttled.groups else None
                return Verdict(Action.RETRY, float(named or 1), throttled=True)
        if status is None or status in RETRYABLE_STATUS:
            return Verdict(Action.RETRY, parse_retry_after(retry_after))
        return Verdict(Action.FAIL)

    def delay(self, retry: int, wait: float | None = None) -> float:
        """Return the wait before retry `retry` (0: the first): the server's `wait` capped by
        retry_after_max, else the backoff doubled `retry` times, capped, times [0.5, 1)."""
        if wait is not None:
            return min(max(wait, 0.0), self.retry_after_max)
        base = min(self.backoff_max, self.backoff * 2.0 ** min(retry, MAX_DOUBLINGS))
        return base * (0.5 + self.rng.random() / 2)

    def next_wait(
        self, attempts: int, wait: float | None = None, elapsed: float = 0.0
    ) -> float | None:
        """Return the wait before the next attempt after `attempts` failed ones, `elapsed`
        seconds after the first began; None when the retries or the deadline are spent."""
        if attempts > self.retries:
            return None
        delay = self.delay(attempts - 1, wait)
        if self.deadline is not None and elapsed + delay >= self.deadline:
            return None
        return delay

    def run(
        self,
        attempt: Callable[[], T],
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        what: str = "",
    ) -> T:
        """Call `attempt` until it returns; retry each `Transient` it raises while the
        retries and the deadline last, then raise the last one (its `attempts` set)."""
        started, attempts = clock(), 0
        while True:
            try:
                return attempt()
            except Transient as exc:
                attempts += 1
                exc.attempts = attempts
                wait = self.next_wait(attempts, exc.wait, clock() - started)
                if wait is None:
                    raise
                if what:
                    log.info("%s: %s; retrying in %.1f s", what, exc.reason, wait)
                sleep(wait)
