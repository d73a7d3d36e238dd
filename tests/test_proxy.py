"""Downloads through a real forward proxy (proxy.py from PyPI) set in the environment."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from stages.net.download import Downloader
from stages.pipeline.compose import group_defaults

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


def proxied(log, path: str) -> int:
    """Count the requests for a path the proxy's access log shows."""
    time.sleep(0.2)  # the proxy logs after it answers
    return sum(1 for line in log.read_text().splitlines() if f"{path} - " in line)


def one_image(standin_root) -> str:
    files = json.loads((standin_root / "_datasets.json").read_text())[0]["files"]
    return sorted(r for r in files if r.endswith(".jpg"))[0]


def fetch(tmp_path, url):
    dl = Downloader(group_defaults("fetch", retries=0), tmp_path / "cache")
    try:
        return dl.fetch(url, refresh=True)
    finally:
        dl.close()


def test_requests_go_through_the_proxy_with_its_credentials(
    proxy, server, standin_root, tmp_path, clean_env
):
    port, log = proxy
    rel = one_image(standin_root)
    url = f"{server.url}/gcp/{rel}"
    clean_env.setenv("http_proxy", f"http://user:pa55@127.0.0.1:{port}")
    res = fetch(tmp_path, url)
    assert res.status == "ok"
    assert proxied(log, f"/gcp/{rel}") == 1
    # A wrong proxy password is that item's failure, with the proxy's answer as reason.
    clean_env.setenv("http_proxy", f"http://user:wrong@127.0.0.1:{port}")
    res = fetch(tmp_path, url)
    assert (res.status, res.reason) == ("failed", "http 407")
    assert server.requests[f"/gcp/{rel}"] == 1  # only the first one reached the server


def test_no_proxy_and_the_upper_case_rule(proxy, server, standin_root, tmp_path, clean_env):
    port, log = proxy
    rel = one_image(standin_root)
    url = f"{server.url}/gcp/{rel}"
    before = proxied(log, f"/gcp/{rel}")
    # no_proxy names the host: straight to the server.
    clean_env.setenv("http_proxy", f"http://user:pa55@127.0.0.1:{port}")
    clean_env.setenv("no_proxy", "127.0.0.1")
    assert fetch(tmp_path, url).status == "ok"
    # libcurl ignores upper-case HTTP_PROXY for plain http (a CGI "httpoxy" guard).
    clean_env.delenv("http_proxy")
    clean_env.delenv("no_proxy")
    clean_env.setenv("HTTP_PROXY", f"http://user:wrong@127.0.0.1:{port}")
    assert fetch(tmp_path, url).status == "ok"
    assert proxied(log, f"/gcp/{rel}") == before
    assert server.requests[f"/gcp/{rel}"] == 2
