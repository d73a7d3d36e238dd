"""A hostile server's every trick ends as one item's recorded outcome, never a crash."""

from __future__ import annotations

import hashlib
import re
import time

import pytest

from stages.core.executor import LocalExecutor
from stages.core.origins import origin_of
from stages.net.cache import PartFile
from stages.net.credentials import Credential, Credentials
from stages.net.download import CredentialRejected, Downloader
from stages.pipeline.compose import group_defaults
from tests.hostile import GOOD, JPEG, HostileServer, wait_until
from tests.test_download import FakeClock, FrozenClock, assert_cache_sound

LIMITS = dict(
    retries=1,
    backoff=0.01,
    backoff_max=0.02,
    retry_after_max=0.5,
    low_speed_limit=100,
    low_speed_time=1.0,
    attempt_timeout=1.5,
    max_item_bytes=1 << 20,
    max_redirects=5,
    workers=6,
)

# path -> (status, reason): what each hostile answer must end as.
EXPECTED = {
    "/good": ("ok", ""),
    "/good.jpg": ("ok", ""),
    "/excess": ("ok", ""),  # the 10 announced bytes; the smuggled response is discarded
    "/early-hints": ("ok", ""),  # 100 and 103 before the final 200
    "/to-good": ("ok", ""),
    "/chunk-negative": ("failed", "receive error"),
    "/chunk-nonascii": ("failed", "receive error"),
    "/length-negative": ("failed", "malformed response"),
    "/length-nonascii": ("failed", "malformed response"),
    "/status-nonascii": ("failed", "malformed response"),
    "/status-huge": ("failed", "http 999"),
    "/two-lengths": ("failed", "malformed response"),
    "/no-content": ("failed", "http 204"),
    "/not-modified": ("failed", "http 304"),
    "/gzip": ("failed", "unrequested content-encoding"),
    "/gzip-trailer": ("failed", "unrequested content-encoding"),
    "/retry-nonascii": ("failed", "http 503"),
    "/retry-huge": ("failed", "http 503"),
    "/loop": ("failed", "too many redirects"),
    "/to-ftp": ("failed", "redirect to a ftp URL refused"),
    "/bad-port": ("failed", "redirect to an invalid URL"),
    "/drip": ("failed", "stalled: below the minimum transfer rate"),
    "/trickle": ("failed", "attempt deadline exceeded"),
    "/big-length": ("failed", f"body over the cap of {1 << 20} bytes"),
    "/big-chunked": ("failed", f"body over the cap of {1 << 20} bytes"),
    "/big-404": ("missing", "http 404"),  # a huge error body: the status decides
    "/big-401": ("failed", "http 401"),  # no credential of ours for this origin
    "/latin1-location": ("missing", "http 404"),  # followed, percent-encoded, to /caf%E9
    "/utf8-location": ("missing", "http 404"),
    "/status-like-header": ("failed", "malformed response"),
    "/nothing-here": ("missing", "http 404"),
}


@pytest.fixture(scope="module")
def hostile():
    with HostileServer() as srv:
        yield srv


def downloader(tmp_path, name="cache", clock=None, **kw) -> Downloader:
    cfg = group_defaults("fetch", **{**LIMITS, **kw})
    clock = clock or FakeClock()
    return Downloader(
        cfg,
        tmp_path / name,
        ledger_name="h",
        clock=clock,
        sleep=clock.sleep,
        executor=LocalExecutor(2),
    )


def test_every_hostile_answer_is_one_items_outcome(tmp_path, hostile):
    urls = {f"{hostile.url}{path}": path for path in EXPECTED}
    runs = []
    for name in ("first", "second"):
        dl = downloader(tmp_path, name)
        results = dl.fetch_all(list(urls))
        got = {urls[u]: (r.status, r.reason) for u, r in results.items()}
        assert got == EXPECTED
        # The ledger holds exactly what the run returned, for every URL.
        ledger = {u: (r.status, r.reason) for u, r in dl.ledger.all().items()}
        assert ledger == {u: (r.status, r.reason) for u, r in results.items()}
        assert_cache_sound(dl)
        assert results[f"{hostile.url}/good"].sha256 == hashlib.sha256(GOOD).hexdigest()
        assert results[f"{hostile.url}/good.jpg"].sha256 == hashlib.sha256(JPEG).hexdigest()
        assert results[f"{hostile.url}/excess"].sha256 == hashlib.sha256(GOOD[:10]).hexdigest()
        dl.close()
        runs.append(got)
    # Reasons are stable strings: the same on every run, with no temp paths or process ids.
    assert runs[0] == runs[1]
    for _status, reason in runs[0].values():
        bare = reason.replace(str(LIMITS["max_item_bytes"]), "<cap>")  # settings may appear
        assert not re.search(r"/tmp|\.part|pid|thread|\d{5,}", bare), reason


def test_bytes_beyond_content_length_never_reach_the_next_response(tmp_path, hostile):
    # One connection only: a client that kept reading it would hand "EVIL!" to /good.
    dl = downloader(tmp_path, workers=1)
    for _ in range(3):
        excess = dl.fetch(f"{hostile.url}/excess", refresh=True)
        good = dl.fetch(f"{hostile.url}/good", refresh=True)
        assert excess.sha256 == hashlib.sha256(GOOD[:10]).hexdigest()
        assert good.sha256 == hashlib.sha256(GOOD).hexdigest()
    dl.close()


def test_hostile_retry_after_values_are_ignored_or_capped(tmp_path, hostile, monkeypatch):
    # The frozen clock moves only while the downloader sleeps, so the server's timestamps of
    # the attempts are spaced exactly by the waits the downloader chose.
    clock = FrozenClock()
    monkeypatch.setattr(hostile, "clock", clock)
    monkeypatch.setattr(hostile, "times", {})

    def gaps(path: str) -> list[float]:
        times = hostile.times[path]
        return [b - a for a, b in zip(times, times[1:], strict=False)]

    dl = downloader(tmp_path, clock=clock, retries=2, backoff=0.01, retry_after_max=0.5)
    dl.fetch(f"{hostile.url}/retry-nonascii")  # "٣٠" is not 30: exponential backoff
    assert len(gaps("/retry-nonascii")) == 2
    assert all(0 < gap <= 0.02 for gap in gaps("/retry-nonascii"))  # backoff_max 0.02
    dl.fetch(f"{hostile.url}/retry-huge")  # 10^22 seconds: capped by retry_after_max
    assert gaps("/retry-huge") == pytest.approx([0.5, 0.5])
    dl.close()


def test_a_body_over_the_cap_is_stopped_during_the_transfer(tmp_path, hostile):
    dl = downloader(tmp_path, max_item_bytes=1 << 20)
    res = dl.fetch(f"{hostile.url}/big-chunked")
    assert res.status == "failed" and "cap" in res.reason
    # The server had 256 MiB to send; the client hung up soon after the first MiB.
    assert hostile.sent["/big-chunked"] < 16 << 20
    assert_cache_sound(dl)
    dl.close()


@pytest.mark.parametrize(
    "path, bound, reason",
    [
        # 4 B/s, under the 100 B/s limit: stopped by the rate check after low_speed_time.
        ("/drip", 1.0, "stalled: below the minimum transfer rate"),
        # 640 B/s, over the limit, but 16 s for the body: stopped by the attempt deadline.
        ("/trickle", 2.0, "attempt deadline exceeded"),
    ],
    ids=["drip", "trickle"],
)
def test_drips_and_trickles_are_bounded_by_rate_and_deadline(
    tmp_path, hostile, path, bound, reason
):
    dl = downloader(tmp_path, retries=0, low_speed_time=1.0, attempt_timeout=2.0)
    target = f"{path}?bounded-{tmp_path.name}"  # this test's own connection in the server log
    start = time.monotonic()
    res = dl.fetch(f"{hostile.url}{target}")
    took = time.monotonic() - start
    assert (res.status, res.reason, res.attempts) == ("failed", reason, 1)
    # Neither limit fires early (a busy machine only makes the transfer take longer).
    assert took > bound - 0.2, took
    # The client hung up on the server instead of leaving the transfer open.
    assert wait_until(lambda: hostile.hangups[target] > 0), "the connection was never closed"
    dl.close()


def test_malformed_urls_are_items_failures_even_with_credentials(tmp_path, hostile):
    cred = Credential(frozenset({origin_of(hostile.url)}), header="X-Key", value="k")
    cfg = group_defaults("fetch", **LIMITS)
    dl = Downloader(
        cfg, tmp_path / "cache", credentials=Credentials([cred]), executor=LocalExecutor(2)
    )
    bad = ["http://127.0.0.1:99999/x.jpg", f"{hostile.url}/nul\x00.jpg", f"{hostile.url}/a b"]
    results = dl.fetch_all([*bad, f"{hostile.url}/good"])
    assert {u: results[u].reason for u in bad} == dict.fromkeys(bad, "malformed URL")
    assert results[f"{hostile.url}/good"].status == "ok"
    dl.close()


def test_a_credentialed_origin_refusing_stops_everything_whatever_the_body(tmp_path, hostile):
    cred = Credential(frozenset({origin_of(hostile.url)}), header="X-Key", value="k", label="K")
    dl = Downloader(
        group_defaults("fetch", **LIMITS),
        tmp_path / "cache",
        credentials=Credentials([cred]),
        executor=LocalExecutor(2),
    )
    with pytest.raises(CredentialRejected, match="answered http 401 to the credential from K"):
        dl.fetch_all([f"{hostile.url}/big-401", f"{hostile.url}/good", f"{hostile.url}/drip"])
    assert_cache_sound(dl)
    dl.close()


def test_ctrl_c_inside_a_transfer_callback_is_not_swallowed(tmp_path, hostile, monkeypatch):
    # pycurl prints and swallows what a callback raises; a Ctrl-C that lands while a body is
    # being received must still stop the run, after recording what had finished.
    calls = []

    def write(self, data):
        calls.append(len(data))
        if len(calls) == 3:
            raise KeyboardInterrupt
        self.chunks.append(data)
        self.size += len(data)

    monkeypatch.setattr(PartFile, "write", write)
    dl = downloader(tmp_path, workers=1)
    urls = [f"{hostile.url}/good?{i}" for i in range(6)]
    with pytest.raises(KeyboardInterrupt):
        dl.fetch_all(urls)
    recorded = dl.ledger.all()
    assert recorded and all(r.status == "ok" for r in recorded.values())
    assert len(recorded) < len(urls)
    assert_cache_sound(dl)
    dl.close()
