"""The one retry policy: statuses, Retry-After, backoff and its caps, the attempt loop."""

from __future__ import annotations

import email.utils
import random
from types import SimpleNamespace

import pytest

from stages.net.ledger import Result
from stages.net.retry import (
    Action,
    Policy,
    SessionBlocked,
    Transient,
    Verdict,
    parse_retry_after,
)
from stages.pipeline.compose import group_defaults
from stages.sources.kinetics import youtube
from stages.sources.tator.api import AUTH_400
from stages.sources.tator.conf import THROTTLED


class Fixed(random.Random):
    """A jitter source that always draws the same value."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


class Clock:
    """A clock that only sleeping moves; records the sleeps."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def policy(**changes) -> Policy:
    values = dict(
        retries=3, backoff=1.0, backoff_max=30.0, retry_after_max=120.0, attempt_timeout=60.0
    )
    return Policy(**{**values, **changes})


def tator_policy(**changes) -> Policy:
    cfg = group_defaults("fetch", **changes)
    return Policy.from_conf(cfg, throttled=THROTTLED, blocked=AUTH_400)


def test_the_policy_is_built_from_conf_fetch():
    cfg = group_defaults("fetch", retries=7, backoff=0.25, backoff_max=9.0, retry_after_max=33.0)
    p = Policy.from_conf(cfg)
    assert (p.retries, p.backoff, p.backoff_max, p.retry_after_max) == (7, 0.25, 9.0, 33.0)
    assert p.attempt_timeout == cfg.attempt_timeout
    assert p.deadline is None and p.throttled is None and p.blocked is None and p.pace is None


@pytest.mark.parametrize("status", [202, 408, 425, 429, 500, 501, 502, 503, 504, 507, 520, 599])
def test_transient_statuses_are_retried(status):
    assert tator_policy().judge(status).action is Action.RETRY
    assert policy().judge(status).action is Action.RETRY


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 413, 451, 301, 304])
def test_permanent_statuses_are_not(status):
    assert policy().judge(status).action is Action.FAIL
    # Without a credential of ours in the request, a 401/403 is that item's failure only.
    assert tator_policy().judge(status, body="nope").action is Action.FAIL


def test_no_answer_at_all_is_retried():
    assert policy().judge(None) == Verdict(Action.RETRY, None)


def test_retry_after_comes_with_the_verdict():
    assert policy().judge(429, "7").wait == 7.0
    assert policy().judge(503, "soon").wait is None
    assert policy().judge(404, "7").wait is None  # not retried: its wait does not matter


@pytest.mark.parametrize(
    "body, wait",
    [
        ("Request was throttled. Expected available in 12 seconds.", 12.0),
        ("Request was throttled. Expected available in 1.5 seconds.", 1.5),
        ("Request was throttled.", 1.0),  # no number: a second
        (b'{"message": "Request was throttled. Expected available in 3 seconds."}', 3.0),
    ],
)
def test_a_throttle_worded_in_a_400_is_retried_after_the_wait_it_names(body, wait):
    verdict = tator_policy().judge(400, None, body, credentialed=True)
    assert verdict == Verdict(Action.RETRY, wait, throttled=True)
    # The same words in another refusal, or without the service's wording: not a throttle.
    assert tator_policy().judge(404, None, body).action is Action.FAIL
    assert policy().judge(400, None, body).action is Action.FAIL


def test_a_refused_credential_or_a_blocked_session_stops():
    p = tator_policy()
    assert p.judge(401, credentialed=True).action is Action.STOP
    assert p.judge(403, credentialed=True).action is Action.STOP
    assert p.judge(400, None, '{"message": "Invalid token."}').action is Action.STOP
    assert p.judge(400, None, b"Authentication credentials were not provided.").action is (
        Action.STOP
    )
    assert p.judge(400, None, '{"message": "Invalid frame 9"}').action is Action.FAIL


def test_retry_after_in_seconds_and_as_an_http_date():
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(" 120 ") == 120.0
    now = 1_700_000_000.0
    in_90s = email.utils.formatdate(now + 90, usegmt=True)
    assert parse_retry_after(in_90s, now=now) == pytest.approx(90.0)
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now=now) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # long past


@pytest.mark.parametrize("value", [None, "", "soon", "1.5", "-5", "\u0663\u0660", "12s"])
def test_retry_after_that_is_neither_is_ignored(value):
    assert parse_retry_after(value) is None


def test_a_servers_wait_is_capped():
    p = policy(retry_after_max=120.0)
    assert p.delay(0, 7.0) == 7.0
    assert p.delay(0, 10.0**22) == 120.0
    assert p.delay(5, 0.0) == 0.0  # the server's wait, not the backoff, however late the retry
    assert p.delay(0, -3.0) == 0.0


def test_backoff_doubles_up_to_its_cap():
    p = policy(backoff=1.0, backoff_max=30.0, rng=Fixed(0.999999))
    assert [round(p.delay(n)) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert p.delay(10_000) == pytest.approx(30.0)  # no overflow on a very late retry


def test_jitter_stays_within_half_to_all_of_the_backoff_and_is_seeded():
    low, high = policy(rng=Fixed(0.0)), policy(rng=Fixed(0.999999))
    assert [low.delay(n) for n in range(3)] == [0.5, 1.0, 2.0]
    waits = [policy(rng=random.Random(7)).delay(2) for _ in range(2)]
    assert waits[0] == waits[1]  # one seed, one wait
    drawn = [policy(rng=random.Random(s)).delay(2) for s in range(50)]
    assert all(2.0 <= w < 4.0 for w in drawn) and len(set(drawn)) > 40
    assert high.delay(2) == pytest.approx(4.0)


def test_next_wait_stops_after_the_retries_and_before_the_deadline():
    p = policy(retries=2, rng=Fixed(0.0))
    assert [p.next_wait(n) for n in (1, 2, 3)] == [0.5, 1.0, None]
    bounded = policy(retries=9, deadline=10.0, rng=Fixed(0.0))
    assert bounded.next_wait(1, None, elapsed=9.0) == 0.5
    assert bounded.next_wait(1, None, elapsed=9.5) is None  # it would start at the deadline
    assert bounded.next_wait(1, 60.0, elapsed=0.0) is None  # the server's wait is past it


def test_run_retries_transients_with_the_policys_waits():
    clock = Clock()
    answers = [Transient("http 503"), Transient("http 429", 7.0), "done"]

    def attempt():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    p = policy(rng=Fixed(0.0))
    assert p.run(attempt, sleep=clock.sleep, clock=clock) == "done"
    assert clock.sleeps == [0.5, 7.0]


def test_run_gives_up_with_the_last_failure_and_its_attempt_count():
    clock, calls = Clock(), []

    def attempt():
        calls.append(clock())
        raise Transient(f"http 50{len(calls)}")

    with pytest.raises(Transient) as err:
        policy(retries=2).run(attempt, sleep=clock.sleep, clock=clock)
    assert (err.value.reason, err.value.attempts, len(calls)) == ("http 503", 3, 3)
    assert len(clock.sleeps) == 2


def test_run_stops_at_the_overall_deadline():
    clock, calls = Clock(), []

    def attempt():
        calls.append(clock())
        raise Transient("http 503", 4.0)

    with pytest.raises(Transient) as err:
        policy(retries=100, deadline=10.0).run(attempt, sleep=clock.sleep, clock=clock)
    assert calls == [0.0, 4.0, 8.0] and err.value.attempts == 3


def test_run_passes_other_failures_through_at_once():
    calls = []

    def attempt():
        calls.append(1)
        raise SessionBlocked("blocked")

    with pytest.raises(SessionBlocked):
        policy().run(attempt, sleep=lambda s: None)
    assert calls == [1]


def fetch_clip(monkeypatch, outcomes: list[Result], **changes) -> tuple[Result, list[float]]:
    """Run youtube.fetch_clip with attempts that give `outcomes` in turn."""
    clock = Clock()
    monkeypatch.setattr(youtube, "attempt", lambda *a: outcomes.pop(0))
    pol = policy(rng=Fixed(0.0), **changes)
    # The two members of Context that a clip's attempts use, on a clock that sleeps instantly.
    ctx = SimpleNamespace(
        policy=pol, retry=lambda attempt: pol.run(attempt, sleep=clock.sleep, clock=clock)
    )
    res = youtube.fetch_clip(None, None, ctx, None)
    return res, clock.sleeps


def test_clip_attempts_follow_the_policy(monkeypatch):
    url = "https://example.org/v"
    ok = Result(url, "ok", "", "0" * 64, 1)
    res, sleeps = fetch_clip(
        monkeypatch,
        [
            Result(url, "failed", "HTTP 503", http_status=503),
            Result(url, "failed", "timed out"),
            ok,
        ],
    )
    assert (res.status, res.attempts, sleeps) == ("ok", 3, [0.5, 1.0])
    # A permanent refusal is not asked again in this run (the next run retries it).
    res, sleeps = fetch_clip(monkeypatch, [Result(url, "failed", "HTTP 403", http_status=403)])
    assert (res.status, res.attempts, sleeps) == ("failed", 1, [])
    # Unusable bytes after every attempt: the clip is corrupt at the source.
    bad = [Result(url, "failed", "no video packets") for _ in range(3)]
    res, sleeps = fetch_clip(monkeypatch, bad, retries=2)
    assert (res.status, res.attempts, len(sleeps)) == ("corrupt", 3, 2)
