"""A hostile HTTP server on loopback: each path answers with hand-written, misbehaving bytes.

Python's http.server cannot send broken framing, so this speaks raw bytes on a socket. Every
script gets the connection and the request, writes what it likes, and says whether the
connection stays open for the next request (keep-alive), so a script can try to smuggle bytes
into the next response.
"""

from __future__ import annotations

import gzip
import socket
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Callable

GOOD = bytes(range(256)) * 40  # 10,240 bytes any script may serve as a correct body
JPEG = b"\xff\xd8\xff\xe0" + b"j" * 3000 + b"\xff\xd9"

Script = Callable[[socket.socket, "HostileServer"], bool]


def wait_until(condition: Callable[[], object], timeout: float = 30.0) -> bool:
    """Poll condition until it holds or timeout passes (a hang guard); return whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def head(status: str, *headers: str) -> bytes:
    """Return a status line and headers, CRLF-terminated."""
    return ("\r\n".join([f"HTTP/1.1 {status}", *headers]) + "\r\n\r\n").encode("utf-8")


def response(body: bytes, status: str = "200 OK", *headers: str) -> bytes:
    """Return a complete response framed by Content-Length."""
    return head(status, f"Content-Length: {len(body)}", *headers) + body


def fixed(body: bytes, status: str = "200 OK", *headers: str) -> Script:
    """Answer with a body framed by Content-Length, keeping the connection."""
    return raw(response(body, status, *headers), True)


def raw(data: bytes, keep: bool = False) -> Script:
    """Answer with exactly these bytes."""

    def script(conn, server):
        conn.sendall(data)
        return keep

    return script


def chunked(body: bytes) -> bytes:
    """Return a body in one chunk plus the last-chunk line (trailers may follow)."""
    return f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n"


def drip(body: bytes, every: float, step: int = 1) -> Script:
    """Send a Content-Length body `step` bytes at a time, every `every` seconds."""

    def script(conn, server):
        conn.sendall(head("200 OK", f"Content-Length: {len(body)}"))
        for i in range(0, len(body), step):
            if server.stopping.wait(every):
                return False
            conn.sendall(body[i : i + step])
        return True

    return script


def endless_chunks(path: str, total: int) -> Script:
    """Send a chunked body of `total` bytes, counting what the client accepted."""

    def script(conn, server):
        conn.sendall(head("200 OK", "Transfer-Encoding: chunked"))
        block = b"\xab" * 65536
        frame = f"{len(block):x}\r\n".encode() + block + b"\r\n"
        sent = 0
        try:
            while sent < total:
                conn.sendall(frame)
                sent += len(block)
                server.count(path, len(block))
            conn.sendall(b"0\r\n\r\n")
        except OSError:
            return False  # the client hung up: exactly what a size cap should do
        return True

    return script


def scripts(base: str) -> dict[str, Script]:
    """Return every hostile path this server answers (base: its own http://host:port)."""
    return {
        "/good": fixed(GOOD),
        "/good.jpg": fixed(JPEG),
        # A correct 10-byte body, then a whole second response on the same keep-alive
        # connection: if the client read it as the next answer, /good would get "EVIL!".
        "/excess": raw(head("200 OK", "Content-Length: 10") + GOOD[:10] + response(b"EVIL!"), True),
        "/chunk-negative": raw(
            head("200 OK", "Transfer-Encoding: chunked") + b"-5\r\nabcde\r\n0\r\n\r\n"
        ),
        "/chunk-nonascii": raw(
            head("200 OK", "Transfer-Encoding: chunked")
            + "\uff11\uff10\r\n".encode()
            + b"abcdefghij\r\n0\r\n\r\n"
        ),
        "/length-negative": raw(head("200 OK", "Content-Length: -1") + b"abc"),
        "/length-nonascii": raw(head("200 OK", "Content-Length: \u0663") + b"abc"),
        "/status-nonascii": raw(head("\uff12\uff10\uff10 OK", "Content-Length: 3") + b"abc"),
        "/status-huge": raw(b"HTTP/1.1 99999 Odd\r\nContent-Length: 3\r\n\r\nabc"),
        "/two-lengths": raw(head("200 OK", "Content-Length: 3", "Content-Length: 5") + b"abcde"),
        "/early-hints": raw(
            head("100 Continue")
            + head("103 Early Hints", "Link: </style.css>; rel=preload")
            + response(GOOD),
            True,
        ),
        "/no-content": raw(head("204 No Content"), True),
        "/not-modified": raw(head("304 Not Modified", 'ETag: "x"'), True),
        "/gzip": fixed(gzip.compress(GOOD, mtime=0), "200 OK", "Content-Encoding: gzip"),
        # The same, chunked and with a trailer after the body: trailers must not wipe the
        # headers the checks read.
        "/gzip-trailer": raw(
            head("200 OK", "Content-Encoding: gzip", "Transfer-Encoding: chunked", "Trailer: X-T")
            + chunked(gzip.compress(GOOD, mtime=0))
            + b"X-T: 1\r\n\r\n",
            True,
        ),
        "/retry-nonascii": fixed(b"busy", "503 Busy", "Retry-After: \u0663\u0660"),
        "/retry-huge": fixed(b"busy", "503 Busy", "Retry-After: 99999999999999999999999"),
        "/loop": fixed(b"", "302 Found", "Location: /loop"),
        "/to-ftp": fixed(b"", "302 Found", "Location: ftp://127.0.0.1/x.jpg"),
        "/bad-port": fixed(b"", "302 Found", "Location: http://127.0.0.1:99999/x.jpg"),
        "/to-good": fixed(b"", "301 Moved", f"Location: {base}/good"),
        "/drip": drip(GOOD[:400], 0.25),
        "/trickle": drip(GOOD, 0.1, 64),  # 640 B/s: above a low-speed limit of 100 B/s
        "/big-length": raw(head("200 OK", f"Content-Length: {64 << 20}") + b"x" * 4096),
        # Error answers declaring huge bodies: the status decides, not the size cap.
        "/big-404": raw(head("404 Not Found", f"Content-Length: {64 << 20}") + b"x" * 4096),
        "/big-401": raw(head("401 Unauthorized", f"Content-Length: {64 << 20}") + b"x" * 4096),
        # Locations that are not ASCII: Latin-1 bytes (not even UTF-8), and UTF-8.
        "/latin1-location": raw(
            b"HTTP/1.1 302 Found\r\nLocation: /caf\xe9\r\nContent-Length: 0\r\n\r\n", True
        ),
        "/utf8-location": raw(head("302 Found", "Location: /caf\u00e9", "Content-Length: 0"), True),
        # A header line that looks like a status line must not be taken for one.
        "/status-like-header": raw(
            b"HTTP/1.1 200 OK\r\nX-Note: 1\r\nHTTP/1.1 404 Not Found\r\nConnection: close"
            b"\r\n\r\n" + GOOD
        ),
        "/big-chunked": endless_chunks("/big-chunked", 256 << 20),
    }


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        conn: socket.socket = self.request
        conn.settimeout(10)
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
            request, buf = buf.split(b"\r\n\r\n", 1)
            line = request.split(b"\r\n", 1)[0].decode("latin-1")
            path = line.split(" ")[1] if line.count(" ") >= 2 else "/"
            server: HostileServer = self.server.hostile
            server.count(path.split("?")[0], 0, request=True)
            script = server.scripts.get(path.split("?")[0])
            script = script or raw(head("404 Not Found", "Content-Length: 0"), True)
            try:
                keep = script(conn, server)
            except OSError:
                server.hung_up(path)
                return
            if not keep:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


class HostileServer:
    """Serve the hostile scripts on 127.0.0.1 in a background thread."""

    def __init__(self):
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hostile = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.scripts = scripts(self.url)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.requests: Counter = Counter()
        self.sent: Counter = Counter()
        # When each path was asked for, by `clock` (a test may swap in its fake clock).
        self.clock: Callable[[], float] = time.monotonic
        self.times: dict[str, list[float]] = {}
        # Request targets (query included) whose client hung up while a script was writing.
        self.hangups: Counter = Counter()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def count(self, path: str, nbytes: int, request: bool = False) -> None:
        with self.lock:
            if request:
                self.requests[path] += 1
                self.times.setdefault(path, []).append(self.clock())
            self.sent[path] += nbytes

    def hung_up(self, target: str) -> None:
        """Record that the client closed the connection while a script was answering target."""
        with self.lock:
            self.hangups[target] += 1

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        time.sleep(0.05)
