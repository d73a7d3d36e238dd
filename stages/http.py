"""Plain HTTP/1.1 GETs over one keep-alive connection per thread and host.

A minimal client on raw sockets: on a 2-core machine fetching thousands of small images a
second, http.client's header parsing and urllib3's pooling cost more CPU than the transfer.
It frames bodies by Content-Length, chunked encoding, or connection close, and follows
redirects. Proxies (HTTP(S)_PROXY) go through urllib3's ProxyManager instead.
"""

from __future__ import annotations

import socket
import ssl
import threading
import urllib.request
from urllib.parse import urljoin, urlsplit

import urllib3

REDIRECTS = {301, 302, 303, 307, 308}
MAX_HEADER = 64 << 10
RECV = 256 << 10


class ProtocolError(ConnectionError):
    """The server broke HTTP/1.1 framing (or closed before answering)."""


class StaleConnection(ProtocolError):
    """A reused keep-alive connection was closed by the server before any response byte."""


class Connection:
    """One socket speaking HTTP/1.1 to one host."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int | None,
        connect_timeout: float,
        read_timeout: float,
        context: ssl.SSLContext,
    ):
        default = 443 if scheme == "https" else 80
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme {scheme!r}")
        sock = socket.create_connection((host, port or default), timeout=connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = context.wrap_socket(sock, server_hostname=host)
            sock.settimeout(read_timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.buf = bytearray()
        self.host = host if not port or port == default else f"{host}:{port}"
        self.used = False

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def _fill(self) -> bool:
        """Receive more bytes into the buffer; return False at EOF."""
        data = self.sock.recv(RECV)
        if not data:
            return False
        self.buf += data
        return True

    def request(self, target: str, headers: dict) -> Response:
        """Send a GET and read the status line and headers."""
        lines = [f"GET {target} HTTP/1.1", f"Host: {self.host}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        reused, self.used = self.used, True
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > MAX_HEADER:
                raise ProtocolError("response headers too long")
            if not self._fill():
                if reused and not self.buf:
                    raise StaleConnection("keep-alive connection closed by the server")
                raise ProtocolError("connection closed before a complete response")
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[: end + 4]
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {head[0][:80]!r}")
        fields: dict[str, str] = {}
        for line in head[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"bad header line {line[:80]!r}")
            name = name.strip().lower()
            value = value.strip()
            fields[name] = f"{fields[name]}, {value}" if name in fields else value
        return Response(self, int(parts[1]), parts[0], fields)


class Response:
    """A streaming response body; call release() when done with it."""

    def __init__(self, conn: Connection, status: int, version: str, fields: dict):
        self.conn, self.status, self.fields = conn, status, fields
        self.done = False
        self.chunk_left = 0  # bytes left in the current chunk (chunked encoding)
        self.chunked = "chunked" in fields.get("transfer-encoding", "").lower()
        length = fields.get("content-length")
        self.left = int(length) if (length or "").isdigit() and not self.chunked else None
        self.will_close = version == "HTTP/1.0" or "close" in fields.get("connection", "").lower()
        if self.left is None and not self.chunked:
            self.will_close = True  # body ends when the server closes
        if self.left == 0:
            self.done = True
        self.release_cb = None

    def header(self, name: str) -> str | None:
        """Return a response header."""
        return self.fields.get(name.lower())

    def _take(self, n: int) -> bytes:
        """Return up to n bytes from the buffer or one receive; b"" at EOF."""
        conn = self.conn
        if not conn.buf and not conn._fill():
            return b""
        out = bytes(conn.buf[:n])
        del conn.buf[:n]
        return out

    def _read_exact(self, n: int) -> bytes:
        """Read n bytes, or fewer if the connection ends first."""
        conn = self.conn
        out = bytearray(n)
        view = memoryview(out)
        have = min(n, len(conn.buf))
        view[:have] = conn.buf[:have]
        del conn.buf[:have]
        while have < n:
            got = conn.sock.recv_into(view[have:], n - have)
            if not got:
                return bytes(out[:have])
            have += got
        return bytes(out)

    def _line(self) -> bytes:
        conn = self.conn
        while (end := conn.buf.find(b"\r\n")) < 0:
            if len(conn.buf) > MAX_HEADER or not conn._fill():
                raise ProtocolError("bad chunked encoding")
        line = bytes(conn.buf[:end])
        del conn.buf[: end + 2]
        return line

    def read(self, n: int) -> bytes:
        """Read up to n bytes of the body (b"" at its end)."""
        if self.done or n <= 0:
            return b""
        if self.left is not None:
            data = self._read_exact(min(n, self.left))
            self.left -= len(data)
            if self.left == 0:
                self.done = True
            elif len(data) < n:
                self.will_close = True  # cut short: the caller sees the missing bytes
            return data
        if not self.chunked:
            data = self._take(n)
            self.done = not data
            return data
        if self.chunk_left == 0:
            size = self._line().split(b";", 1)[0].strip()
            try:
                self.chunk_left = int(size, 16)
            except ValueError:
                raise ProtocolError("bad chunk size") from None
            if self.chunk_left == 0:
                while self._line():
                    pass  # trailers
                self.done = True
                return b""
        data = self._read_exact(min(n, self.chunk_left))
        self.chunk_left -= len(data)
        if not data:
            raise ProtocolError("connection closed inside a chunk")
        if self.chunk_left == 0 and self._line() != b"":
            raise ProtocolError("bad chunk terminator")
        return data

    def release(self, reusable: bool) -> None:
        """Give the connection back for reuse, or close it."""
        self.release_cb(reusable and self.done and not self.will_close)


class ProxyResponse:
    """A urllib3 response (through a proxy) behind the same small interface as Response."""

    def __init__(self, raw):
        self.raw, self.status = raw, raw.status

    def header(self, name: str) -> str | None:
        """Return a response header."""
        return self.raw.headers.get(name)

    def read(self, n: int) -> bytes:
        """Read up to n bytes of the body."""
        return self.raw.read(n)

    def release(self, reusable: bool) -> None:
        """Give the connection back to urllib3's pool, closing it first if it is spoiled."""
        if not reusable:
            self.raw.close()
        self.raw.release_conn()


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

    def _proxy_for(self, scheme: str, host: str) -> str | None:
        proxy = self.proxies.get(scheme)
        if proxy and not urllib.request.proxy_bypass(host):
            return proxy
        return None

    def get(self, url: str) -> Response | ProxyResponse:
        """Send a GET, following redirects; raise OSError on transport failure."""
        for _ in range(6):
            parts = urlsplit(url)
            proxy = self._proxy_for(parts.scheme, parts.hostname or "")
            resp = self._get_via_proxy(proxy, url) if proxy else self._get_direct(parts)
            location = resp.header("Location")
            if resp.status in REDIRECTS and location and isinstance(resp, Response):
                resp.read(1 << 16)  # a small body: read it so the connection can be reused
                resp.release(True)
                url = urljoin(url, location)
                continue
            return resp
        raise ProtocolError("too many redirects")

    def _get_direct(self, parts) -> Response:
        key = (parts.scheme, parts.hostname, parts.port)
        conns = self._conns()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for attempt in (0, 1):
            conn = conns.pop(key, None)
            try:
                if conn is None:
                    conn = Connection(*key, self.connect_timeout, self.read_timeout, self.ssl)
                resp = conn.request(target, self.headers)
            except StaleConnection:
                conn.close()
                if attempt == 0:
                    continue  # the server closed an idle connection: reconnect once
                raise
            except BaseException:
                if conn is not None:
                    conn.close()
                raise

            def release(reusable: bool, conn=conn) -> None:
                if reusable:
                    conns[key] = conn
                else:
                    conn.close()

            resp.release_cb = release
            return resp
        raise AssertionError("unreachable")

    def _get_via_proxy(self, proxy: str, url: str) -> ProxyResponse:
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
        return ProxyResponse(raw)

    def close(self) -> None:
        """Close every idle connection and any proxy pools."""
        with self.lock:
            for conns in self.all_conns:
                for conn in list(conns.values()):
                    conn.close()
                conns.clear()
            for pm in self.proxy_managers.values():
                pm.clear()
