"""Downloads through a real forward proxy (proxy.py from PyPI) set in the environment."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from stages.core.executor import LocalExecutor
from stages.net.download import Downloader
from stages.pipeline.compose import group_defaults
from tests.hostile import wait_until

PROXY_ENV = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    """Run proxy.py on loopback, requiring basic auth user:pa55; yield (port, log path)."""
    port = free_port()
    log = tmp_path_factory.mktemp("proxy") / "proxy.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy",
                "--hostname",
                "127.0.0.1",
                "--port",
                str(port),
                "--basic-auth",
                "user:pa55",
                "--num-acceptors",
                "1",
                "--num-workers",
                "1",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"proxy.py did not start: {log.read_text()}") from None
                time.sleep(0.1)
        yield port, log
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def clean_env(monkeypatch):
    for var in (*PROXY_ENV, "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


class AccessLog:
    """The proxy's access log, read in windows that each end at a marker request."""

    def __init__(self, port: int, log: Path, server):
        self.proxy, self.log, self.server = f"http://user:pa55@127.0.0.1:{port}", log, server
        self.start = 0  # the current window's first line
        self.mark()  # lines of earlier tests, even late ones, fall before this window

    def lines(self) -> list[str]:
        """Return the lines logged so far in the current window."""
        return self.log.read_text().splitlines()[self.start :]

    def mark(self) -> list[str]:
        """End the window with a marker through the proxy; return the lines logged before it."""
        # proxy.py's one worker logs each request when its client connection closes, in
        # order. The requests before the marker have closed theirs already, so once the
        # marker's line is in the log, so are theirs: a late log cannot hide one of them.
        marker = f"/proxy-mark-{uuid.uuid4().hex} - "
        with requests.Session() as session:
            session.trust_env = False  # this request goes through the proxy whatever the test set
            resp = session.get(
                f"{self.server.url}{marker[:-3]}",
                proxies={"http": self.proxy},
                # The proxy logs once the connection is gone: not kept alive in a pool.
                headers={"Connection": "close"},
                timeout=30,
            )
        assert resp.status_code == 404  # the stand-in's answer, relayed by the proxy
        assert wait_until(lambda: any(marker in line for line in self.lines())), "no marker"
        window = self.lines()
        end = next(i for i, line in enumerate(window) if marker in line)
        self.start += end + 1
        return window[:end]


@pytest.fixture
def access(proxy, server) -> AccessLog:
    port, log = proxy
    return AccessLog(port, log, server)


def requested(lines: list[str], path: str) -> list[str]:
    """Return the access-log lines of requests for a path."""
    return [line for line in lines if f"{path} - " in line]


def one_image(standin_root) -> str:
    files = json.loads((standin_root / "_datasets.json").read_text())[0]["files"]
    return sorted(r for r in files if r.endswith(".jpg"))[0]


def fetch(tmp_path, url):
    dl = Downloader(
        group_defaults("fetch", retries=0), tmp_path / "cache", executor=LocalExecutor(2)
    )
    try:
        return dl.fetch(url, refresh=True)
    finally:
        dl.close()


def test_requests_go_through_the_proxy_with_its_credentials(
    proxy, access, server, standin_root, tmp_path, clean_env
):
    port, _ = proxy
    rel = one_image(standin_root)
    url = f"{server.url}/gcp/{rel}"
    clean_env.setenv("http_proxy", f"http://user:pa55@127.0.0.1:{port}")
    res = fetch(tmp_path, url)
    assert res.status == "ok"
    assert wait_until(lambda: requested(access.lines(), f"/gcp/{rel}")), "the proxy logged none"
    [line] = requested(access.mark(), f"/gcp/{rel}")
    assert " - 200 OK - " in line
    # A wrong proxy password is that item's failure, with the proxy's answer as reason.
    clean_env.setenv("http_proxy", f"http://user:wrong@127.0.0.1:{port}")
    res = fetch(tmp_path, url)
    assert (res.status, res.reason) == ("failed", "http 407")
    assert server.requests[f"/gcp/{rel}"] == 1  # only the first one reached the server


def test_no_proxy_and_the_upper_case_rule(proxy, access, server, standin_root, tmp_path, clean_env):
    port, _ = proxy
    rel = one_image(standin_root)
    url = f"{server.url}/gcp/{rel}"
    # no_proxy names the host: straight to the server.
    clean_env.setenv("http_proxy", f"http://user:pa55@127.0.0.1:{port}")
    clean_env.setenv("no_proxy", "127.0.0.1")
    assert fetch(tmp_path, url).status == "ok"
    # libcurl ignores upper-case HTTP_PROXY for plain http (a CGI "httpoxy" guard).
    clean_env.delenv("http_proxy")
    clean_env.delenv("no_proxy")
    clean_env.setenv("HTTP_PROXY", f"http://user:wrong@127.0.0.1:{port}")
    assert fetch(tmp_path, url).status == "ok"
    assert server.requests[f"/gcp/{rel}"] == 2
    # Had either gone through the proxy, its line would be logged before the marker's.
    window = access.mark()
    assert not requested(window, f"/gcp/{rel}"), window


def tunnels(log, origin: str) -> int:
    """Count the CONNECT tunnels to an origin (host:port) the proxy's access log shows."""
    return sum(1 for line in log.read_text().splitlines() if f"CONNECT {origin} - " in line)


def test_https_goes_through_https_proxy_or_all_proxy_and_trusts_ssl_cert_file(
    proxy, standin_root, tmp_path, clean_env
):
    import ssl

    import trustme

    from standins.lila import LilaStandin

    port, log = proxy
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    for var in ("CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        clean_env.delenv(var, raising=False)
    rel = one_image(standin_root)
    with LilaStandin(standin_root, tls=ctx) as secure:
        url, origin = f"{secure.url}/gcp/{rel}", secure.url.removeprefix("https://")
        # certifi's roots do not know the throwaway CA; SSL_CERT_FILE names it.
        assert fetch(tmp_path, url).reason == "tls certificate rejected"
        clean_env.setenv("SSL_CERT_FILE", str(ca_file))
        assert fetch(tmp_path, url).status == "ok"
        # http_proxy is for plain http only: through it, this wrong password would fail.
        clean_env.setenv("http_proxy", f"http://user:wrong@127.0.0.1:{port}")
        assert fetch(tmp_path, url).status == "ok"
        for n, var in enumerate(("https_proxy", "HTTPS_PROXY", "all_proxy"), 1):
            clean_env.setenv(var, f"http://user:pa55@127.0.0.1:{port}")
            assert fetch(tmp_path, url).status == "ok"
            # The proxy logs a tunnel once it closes, which may be a moment later.
            assert wait_until(lambda n=n: tunnels(log, origin) >= n), f"no tunnel for {var}"
            # The proxy's credentials come from the variable too: a wrong one is refused.
            clean_env.setenv(var, f"http://user:wrong@127.0.0.1:{port}")
            res = fetch(tmp_path, url)
            assert (res.status, res.http_status) == ("failed", 407)
            clean_env.delenv(var)
        assert len(secure.seen) == 5  # two straight to the server, one through each tunnel
    assert tunnels(log, origin) == 3
