"""Plain HTTP GETs over one keep-alive connection per thread and host.

http.client costs about half the CPU per request of urllib3's pool, which matters when a
2-core machine fetches thousands of small images a second. Proxies (HTTP(S)_PROXY) go
through urllib3's ProxyManager instead.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import urllib.request
from urllib.parse import urljoin, urlsplit

import urllib3

REDIRECTS = {301, 302, 303, 307, 308}
# Failures of a reused keep-alive connection that the server may have closed while idle.
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class Response:
    """A streaming response; call release() when done with it."""

    def __init__(self, raw, release):
        self.raw, self._release = raw, release
        self.status = raw.status

    def header(self, name: str) -> str | None:
        """Return a response header."""
        return self.raw.headers.get(name)

    def read(self, n: int) -> bytes:
        """Read up to n bytes of the body."""
        return self.raw.read(n)

    def release(self, reusable: bool) -> None:
        """Give the connection back for reuse, or close it."""
        self._release(reusable)


class HttpClient:
    """GET with connect/read timeouts, redirects and per-thread keep-alive connections."""

    def __init__(self, connect_timeout: float, read_timeout: float, headers: dict | None = None):
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.headers = {"Accept-Encoding": "identity", **(headers or {})}
        self.local = threading.local()
        self.ssl = ssl.create_default_context()
        self.proxies = urllib.request.getproxies()
        self.proxy_managers: dict[str, urllib3.ProxyManager] = {}
        self.lock = threading.Lock()
        self.all_conns: list[dict] = []  # every thread's idle connections, for close()

    def _conns(self) -> dict:
        conns = getattr(self.local, "conns", None)
        if conns is None:
            conns = self.local.conns = {}
            with self.lock:
                self.all_conns.append(conns)
        return conns

    def _connect(self, scheme: str, host: str, port: int | None):
        """Open a connection: connect timeout for the handshake, read timeout after."""
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                host, port, timeout=self.connect_timeout, context=self.ssl
            )
        elif scheme == "http":
            conn = http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
        else:
            raise ValueError(f"unsupported URL scheme {scheme!r}")
        conn.connect()
        conn.sock.settimeout(self.read_timeout)
        return conn

    def _proxy_for(self, scheme: str, host: str) -> str | None:
        proxy = self.proxies.get(scheme)
        if proxy and not urllib.request.proxy_bypass(host):
            return proxy
        return None

    def get(self, url: str) -> Response:
        """Send a GET, following redirects; raise OSError/HTTPException on transport failure."""
        for _ in range(6):
            parts = urlsplit(url)
            proxy = self._proxy_for(parts.scheme, parts.hostname or "")
            if proxy:
                return self._get_via_proxy(proxy, url)
            resp = self._get_direct(parts)
            location = resp.header("Location")
            if resp.status in REDIRECTS and location:
                resp.read(1 << 16)
                resp.release(False)
                url = urljoin(url, location)
                continue
            return resp
        raise http.client.HTTPException("too many redirects")

    def _get_direct(self, parts) -> Response:
        key = (parts.scheme, parts.hostname, parts.port)
        conns = self._conns()
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        for attempt in (0, 1):
            conn = conns.pop(key, None)
            reused = conn is not None
            try:
                if conn is None:
                    conn = self._connect(*key)
                conn.request("GET", target, headers=self.headers)
                raw = conn.getresponse()
            except STALE:
                conn.close()
                if reused and attempt == 0:
                    continue  # the server closed an idle connection: reconnect once
                raise
            except BaseException:
                if conn is not None:
                    conn.close()
                raise

            def release(reusable: bool, conn=conn, raw=raw) -> None:
                if reusable and not raw.will_close and raw.isclosed():
                    conns[key] = conn
                else:
                    conn.close()

            return Response(raw, release)
        raise AssertionError("unreachable")

    def _get_via_proxy(self, proxy: str, url: str) -> Response:
        with self.lock:
            pm = self.proxy_managers.get(proxy)
            if pm is None:
                pm = self.proxy_managers[proxy] = urllib3.ProxyManager(
                    proxy, retries=urllib3.Retry(0, redirect=5, raise_on_redirect=False)
                )
        raw = pm.request(
            "GET",
            url,
            headers=self.headers,
            preload_content=False,
            timeout=urllib3.Timeout(connect=self.connect_timeout, read=self.read_timeout),
        )

        def release(reusable: bool) -> None:
            if not reusable:
                raw.close()
            raw.release_conn()

        return Response(raw, release)

    def close(self) -> None:
        """Close every idle connection and any proxy pools."""
        with self.lock:
            for conns in self.all_conns:
                for conn in list(conns.values()):
                    conn.close()
                conns.clear()
            for pm in self.proxy_managers.values():
                pm.clear()
