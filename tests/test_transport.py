"""A hostile server's every trick ends as one item's recorded outcome, never a crash."""

from __future__ import annotations

import hashlib
import re
import time

import pytest

from stages.core.origins import origin_of
from stages.net.credentials import Credential, Credentials
from stages.net.download import CredentialRejected, Downloader, PartFile
from stages.pipeline.compose import group_defaults
from tests.hostile import GOOD, JPEG, HostileServer
from tests.test_download import FakeClock, assert_cache_sound

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
    return Downloader(cfg, tmp_path / name, ledger_name="h", clock=clock, sleep=clock.sleep)


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


def test_hostile_retry_after_values_are_ignored_or_capped(tmp_path, hostile):
    clock = FakeClock()
    dl = downloader(tmp_path, clock=clock, retries=2, backoff=0.01, retry_after_max=0.5)
    dl.fetch(f"{hostile.url}/retry-nonascii")  # "٣٠" is not 30: exponential backoff
    assert len(clock.sleeps) == 2 and all(s < 0.05 for s in clock.sleeps)
    clock.sleeps.clear()
    dl.fetch(f"{hostile.url}/retry-huge")  # 10^22 seconds: capped by retry_after_max
    assert clock.sleeps == [pytest.approx(0.5, abs=0.05)] * 2
    dl.close()


def test_a_body_over_the_cap_is_stopped_during_the_transfer(tmp_path, hostile):
    dl = downloader(tmp_path, max_item_bytes=1 << 20)
    res = dl.fetch(f"{hostile.url}/big-chunked")
    assert res.status == "failed" and "cap" in res.reason
    # The server had 256 MiB to send; the client hung up soon after the first MiB.
    assert hostile.sent["/big-chunked"] < 16 << 20
    assert_cache_sound(dl)
    dl.close()


def test_drips_and_trickles_are_bounded_by_rate_and_deadline(tmp_path, hostile):
    dl = downloader(tmp_path, retries=0, low_speed_time=1.0, attempt_timeout=2.0)
    for path, bound in (("/drip", 1.0), ("/trickle", 2.0)):
        start = time.monotonic()
        res = dl.fetch(f"{hostile.url}{path}")
        took = time.monotonic() - start
        assert res.status == "failed"
        assert bound - 0.2 < took < bound * 3, (path, took)
    dl.close()


def test_malformed_urls_are_items_failures_even_with_credentials(tmp_path, hostile):
    cred = Credential(frozenset({origin_of(hostile.url)}), header="X-Key", value="k")
    cfg = group_defaults("fetch", **LIMITS)
    dl = Downloader(cfg, tmp_path / "cache", credentials=Credentials([cred]))
    bad = ["http://127.0.0.1:99999/x.jpg", f"{hostile.url}/nul\x00.jpg", f"{hostile.url}/a b"]
    results = dl.fetch_all([*bad, f"{hostile.url}/good"])
    assert {u: results[u].reason for u in bad} == dict.fromkeys(bad, "malformed URL")
    assert results[f"{hostile.url}/good"].status == "ok"
    dl.close()


def test_a_credentialed_origin_refusing_stops_everything_whatever_the_body(tmp_path, hostile):
    cred = Credential(frozenset({origin_of(hostile.url)}), header="X-Key", value="k", label="K")
    dl = Downloader(
        group_defaults("fetch", **LIMITS), tmp_path / "cache", credentials=Credentials([cred])
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
