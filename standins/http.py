"""What every HTTP stand-in shares: a threaded loopback server, fault injection, a request log.

A stand-in speaks the real protocol of a service that cannot run here (LILA's blob stores
today; Tator, Figure Eight and a video host next), so the product's real client code runs
against it in tests and in `make demo`. Nothing under stages/ imports this package.
"""

from __future__ import annotations

import collections
import fnmatch
import signal
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

STALL_PREFIX_BYTES = 16


def parse_action(action) -> tuple:
    """Normalise a fault action to a tuple: (kind, arg)."""
    if isinstance(action, tuple | list) and len(action) == 2:
        kind, arg = str(action[0]), action[1]
        if kind in ("429", "stall"):
            return (kind, float(arg))
        if kind == "redirect":
            return (kind, str(arg))
    elif isinstance(action, int) and not isinstance(action, bool):
        if action == 200:
            return ("ok", None)
        if 400 <= action <= 599:
            return ("status", action)
    elif isinstance(action, str):
        if action == "ok":
            return ("ok", None)
        if action.isdigit():
            return parse_action(int(action))
        if action in ("truncate", "reset", "corrupt"):
            return (action, None)
        kind, sep, arg = action.partition(":")
        if sep and kind in ("429", "stall"):
            return (kind, float(arg))
        if sep and kind == "redirect":
            return (kind, arg)
    raise ValueError(f"unknown fault action: {action!r}")


class FaultPlan:
    """Per-request fault actions keyed by fnmatch patterns on a request's relative path.

    Actions: "ok", an HTTP status (500, 404...), ("429", retry_after), "truncate" (half the
    body, then close), "reset" (TCP RST before any byte), "stall:<s>" (a few bytes, then
    silence), "corrupt" (a consistent response with 60% of the bytes), "redirect:<url>".
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._queued: list[tuple[str, collections.deque]] = []
        self._defaults: dict[str, tuple] = {}

    def add(self, pattern: str, actions) -> None:
        """Queue actions, one consumed per matching request, then serve normally."""
        if isinstance(actions, str | int | tuple):
            actions = [actions]
        parsed = collections.deque(parse_action(a) for a in actions)
        with self._lock:
            self._queued.append((pattern, parsed))

    def set_default(self, pattern: str, action) -> None:
        """Apply action to every matching request once queued actions run out (None removes)."""
        with self._lock:
            if action is None:
                self._defaults.pop(pattern, None)
            else:
                self._defaults[pattern] = parse_action(action)

    def clear(self) -> None:
        """Drop all queued and default actions."""
        with self._lock:
            self._queued.clear()
            self._defaults.clear()

    def pending(self) -> int:
        """Return how many queued actions are not yet consumed."""
        with self._lock:
            return sum(len(q) for _, q in self._queued)

    def take(self, path: str) -> tuple | None:
        """Consume and return the action for this request path, or None."""
        with self._lock:
            for pattern, queue in self._queued:
                if queue and fnmatch.fnmatchcase(path, pattern):
                    return queue.popleft()
            for pattern, action in self._defaults.items():
                if fnmatch.fnmatchcase(path, pattern):
                    return action
        return None


def corrupted(data: bytes) -> bytes:
    """Return the object as stored corrupt at the source: its first 60%."""
    return data[: len(data) * 6 // 10]


def parse_range(header: str | None, size: int):
    """Return (start, end) inclusive, "unsatisfiable", or None to serve the whole body."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None  # RFC 9110 lets a server ignore ranges it does not support
    first, sep, last = header[len("bytes=") :].strip().partition("-")
    if not sep or not (first.isdigit() or last.isdigit()):
        return None
    if not first:
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return (max(0, size - n), size - 1)
    start = int(first)
    if last and not last.isdigit():
        return None
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return (start, min(int(last), size - 1) if last else size - 1)


@dataclass(frozen=True)
class Seen:
    """One request as the stand-in received it (for tests asserting where secrets went)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]


class Handler(BaseHTTPRequestHandler):
    """Base request handler: a stand-in overrides route(); faults and ranges come for free."""

    protocol_version = "HTTP/1.1"
    server_version = "standin/1.0"
    timeout = 60  # idle keep-alive connections should not pin threads forever

    def log_message(self, format, *args):  # noqa: A002 - signature from the base class
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle plus the
        # client's delayed ACK stalls every keep-alive response by ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.standin._track(self.connection, add=True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.standin._track(self.connection, add=False)

    def do_GET(self):
        self._respond(head=False)

    def do_HEAD(self):
        self._respond(head=True)

    def do_POST(self):
        self._respond(head=False)

    def do_PUT(self):
        self._respond(head=False)

    def read_body(self, limit: int = 1 << 30, upto: int | None = None) -> bytes:
        """Read the request body (a stand-in reading only `upto` bytes closes afterwards)."""
        size = int(self.headers.get("Content-Length") or 0)
        if size > limit:
            self.close_connection = True
            raise ValueError(f"request body of {size} bytes is over {limit}")
        want = size if upto is None else min(size, upto)
        if want < size:
            self.close_connection = True  # the rest of the body is still on the wire
        return self.rfile.read(want)

    def _respond(self, head: bool) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        standin = self.server.standin
        standin._record(Seen(self.command, path, split.query, dict(self.headers.items())))
        self.route(path, split.query, head)

    def route(self, path: str, query: str, head: bool) -> None:
        """Answer one request (stand-ins override this)."""
        self.simple(404, b"not found", head)

    def simple(self, status: int, body: bytes, head: bool, extra=()) -> None:
        """Send a small text/plain response."""
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for key, value in extra:
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def reset(self) -> None:
        """Close the socket with a TCP RST before sending anything."""
        self.close_connection = True
        sock = self.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # detach() so the later graceful shutdown(SHUT_WR) cannot send a FIN first.
        socket.close(sock.detach())

    def pre_fault(self, fault: tuple | None, head: bool) -> bool:
        """Answer faults that replace the response; return True if one did."""
        kind, arg = fault or ("ok", None)
        if kind == "reset":
            self.reset()
        elif kind == "status":
            self.simple(arg, f"{arg} injected fault\n".encode(), head)
        elif kind == "429":
            self.simple(429, b"429 slow down\n", head, [("Retry-After", f"{arg:g}")])
        elif kind == "redirect":
            self.simple(302, b"moved\n", head, [("Location", arg)])
        else:
            return False
        return True

    def serve(
        self, data: bytes, ctype: str, head: bool, fault=None, extra=(), status: int = 200
    ) -> None:
        """Send a body with Range support, applying transfer faults (truncate, stall).

        A "corrupt" fault is the stand-in's to apply (with `corrupted`) before computing
        the headers that describe the body."""
        kind, arg = fault or ("ok", None)
        size = len(data)
        headers = [("Content-Type", ctype), ("Accept-Ranges", "bytes"), *extra]
        rng = parse_range(self.headers.get("Range"), size)
        if rng == "unsatisfiable":
            extra_range = [("Content-Range", f"bytes */{size}")]
            return self.simple(416, b"range not satisfiable\n", head, extra_range)
        body = data
        if rng is not None and status == 200:
            start, end = rng
            status, body = 206, data[start : end + 1]
            headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        if kind == "truncate":
            self.close_connection = True
            self.wfile.write(body[: len(body) // 2])
        elif kind == "stall":
            self.close_connection = True
            self.wfile.write(body[:STALL_PREFIX_BYTES])
            self.wfile.flush()
            self.server.standin._stopping.wait(arg)  # wakes at once when stop() is called
        else:
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False  # stop() must not wait for stalled or idle keep-alive handlers
    request_queue_size = 128  # 20+ parallel downloaders must not overflow the listen backlog

    def handle_error(self, request, client_address):
        """Stay quiet about clients that hang up; still report real bugs."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class Standin:
    """A threaded HTTP/1.1 server on loopback with a fault plan and a log of what it saw."""

    handler: type[Handler] = Handler
    name = "standin"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, tls=None):
        self.faults = FaultPlan()
        self.requests: collections.Counter = collections.Counter()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._server = _Server((host, port), self.handler)
        self._server.standin = self
        scheme = "http"
        if tls is not None:  # an ssl.SSLContext with the server's certificate
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        url_host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        self.url = f"{scheme}://{url_host}:{self._server.server_address[1]}"

    def start(self):
        """Serve in a background thread; return self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=self.name,
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake stalled handlers and close open connections."""
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)
            if seen.method == "GET":
                self.requests[seen.path] += 1

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)


def serve_until_signalled(standin: Standin, banner: str) -> None:
    """Serve until SIGTERM or SIGINT, printing `banner` (with "serving") once ready."""
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    with standin:
        print(banner, flush=True)
        # Event.wait with a timeout so signal handlers run promptly on the main thread.
        while not done.wait(0.5):
            pass
