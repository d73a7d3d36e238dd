"""HTTP on libcurl (pycurl): one CurlMulti drives every transfer of a run.

One thread drives up to `max_connections` transfers; libcurl pools keep-alive connections
across them, reads the proxy environment (`http_proxy`, `https_proxy`, `no_proxy`, with
credentials), enforces connect/low-speed/attempt deadlines and size caps during the transfer,
and discards bytes a server sends beyond Content-Length. Redirects are not followed here: the
caller decides where to go next, so credentials can be re-scoped per origin.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import certifi
import pycurl

PROTOCOLS = pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS
# Bodies of non-200 answers are never kept; past this size the transfer is stopped (the
# connection is then closed rather than reused, which is fine for an error).
ERROR_BODY_MAX = 64 << 10
ERROR_HEAD = 4096  # the start of a non-200 body, kept in memory for the caller to read
BUFFER = 256 << 10  # fewer, larger write callbacks

# libcurl error code (curl.h CURLE_*; pycurl names only some) -> (stable reason, worth
# retrying). Reasons reach manifests and metrics, so they never hold anything that varies
# between runs: no paths, addresses, timings or server-supplied text.
CURL_REASONS: dict[int, tuple[str, bool]] = {
    1: ("unsupported protocol", False),  # CURLE_UNSUPPORTED_PROTOCOL
    3: ("malformed URL", False),  # CURLE_URL_MALFORMAT
    5: ("cannot resolve proxy", True),  # CURLE_COULDNT_RESOLVE_PROXY
    6: ("cannot resolve host", True),  # CURLE_COULDNT_RESOLVE_HOST
    7: ("cannot connect", True),  # CURLE_COULDNT_CONNECT
    8: ("malformed response", True),  # CURLE_WEIRD_SERVER_REPLY
    16: ("http/2 error", True),  # CURLE_HTTP2
    18: ("truncated body", True),  # CURLE_PARTIAL_FILE
    28: ("timeout", True),  # CURLE_OPERATION_TIMEDOUT
    35: ("tls handshake failed", True),  # CURLE_SSL_CONNECT_ERROR
    47: ("too many redirects", False),  # CURLE_TOO_MANY_REDIRECTS
    52: ("empty reply", True),  # CURLE_GOT_NOTHING
    55: ("send error", True),  # CURLE_SEND_ERROR
    56: ("receive error", True),  # CURLE_RECV_ERROR
    60: ("tls certificate rejected", False),  # CURLE_PEER_FAILED_VERIFICATION
    61: ("bad content encoding", True),  # CURLE_BAD_CONTENT_ENCODING
    63: ("over the size cap", False),  # CURLE_FILESIZE_EXCEEDED
    92: ("http/2 stream error", True),  # CURLE_HTTP2_STREAM
}
CURLE_WRITE_ERROR = 23
CURLE_FILESIZE_EXCEEDED = 63


def curl_reason(code: int, message: str) -> tuple[str, bool]:
    """Return a stable reason for a libcurl error, and whether a retry may help."""
    if code == 28:
        # libcurl reports connect, low-speed and whole-transfer timeouts with one code.
        if message.startswith("Operation too slow"):
            return "stalled: below the minimum transfer rate", True
        if "onnect" in message.split(" after ", 1)[0]:
            return "connect timeout", True
        return "attempt deadline exceeded", True
    if code == 1 and "HTTP" in message:
        # A broken status line: libcurl reports it as an unsupported HTTP version.
        return "malformed response", True
    return CURL_REASONS.get(code, (f"transfer error (curl {code})", True))


def ca_bundle() -> str:
    """Return the CA bundle: $CURL_CA_BUNDLE or $SSL_CERT_FILE if set, else certifi's."""
    return os.environ.get("CURL_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or certifi.where()


def location_text(raw: bytes | None) -> str | None:
    """Return a Location as text: bytes that are not printable ASCII percent-encoded."""
    if not raw:
        return None
    return "".join(chr(b) if 0x21 <= b < 0x7F else f"%{b:02X}" for b in raw)


class Sink(Protocol):
    """Where the body of a 200 response goes, chunk by chunk."""

    def write(self, data: bytes) -> None: ...


@dataclass(eq=False)
class Exchange:
    """One request and, once finished, what came back."""

    url: str = field(repr=False)  # may carry a query-string credential
    headers: list[str] = field(repr=False)  # may carry a credential header
    max_bytes: int
    deadline: float
    sink: Sink | None = None
    tag: Any = None
    status: int = 0
    header_lines: list[bytes] = field(default_factory=list)
    error: str | None = None  # stable reason when the transfer itself failed
    retryable: bool = True
    size: int = 0
    capped: bool = False
    error_head: bytes = b""  # the start of a non-200 answer's body
    redirect_url: str | None = None
    content_length: int | None = None
    at_start: bool = True  # at the start of a header block: a status line may come next
    raised: BaseException | None = None  # what a callback raised, handled after perform()

    def header(self, name: str) -> str | None:
        """Return a response header's value (several occurrences joined with ', ')."""
        values = self.header_values(name)
        return ", ".join(values) if values else None

    def header_values(self, name: str) -> list[str]:
        """Return every value of a response header, in order."""
        want = name.lower().encode()
        return [
            value.strip().decode("latin-1")
            for key, sep, value in (line.partition(b":") for line in self.header_lines)
            if sep and key.strip().lower() == want
        ]


@dataclass(frozen=True)
class Options:
    """Transport settings that hold for every request of a run."""

    connect_timeout: float
    low_speed_limit: int
    low_speed_time: float
    max_connections: int
    user_agent: str = "dsrepo/0.2 (+libcurl)"


class Transport:
    """Run many Exchanges concurrently on one CurlMulti, from one thread."""

    def __init__(self, opts: Options):
        self.opts = opts
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, opts.max_connections)
        self.multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, opts.max_connections)
        self.multi.setopt(pycurl.M_MAXCONNECTS, max(4, opts.max_connections * 2))
        self.idle: list[pycurl.Curl] = []
        self.running: dict[pycurl.Curl, Exchange] = {}
        self.cainfo = ca_bundle()
        self.refused: list[Exchange] = []  # requests libcurl refused before any I/O

    @property
    def active(self) -> int:
        """Return how many exchanges are in flight or waiting to be reported."""
        return len(self.running) + len(self.refused)

    def _handle(self) -> pycurl.Curl:
        if self.idle:
            return self.idle.pop()
        c = pycurl.Curl()
        o = self.opts
        c.setopt(pycurl.NOSIGNAL, 1)
        c.setopt(pycurl.PROTOCOLS, PROTOCOLS)
        c.setopt(pycurl.REDIR_PROTOCOLS, PROTOCOLS)
        c.setopt(pycurl.FOLLOWLOCATION, 0)
        c.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(o.connect_timeout * 1000)))
        c.setopt(pycurl.LOW_SPEED_LIMIT, int(o.low_speed_limit))
        c.setopt(pycurl.LOW_SPEED_TIME, max(1, round(o.low_speed_time)))
        c.setopt(pycurl.USERAGENT, o.user_agent)
        c.setopt(pycurl.BUFFERSIZE, BUFFER)
        c.setopt(pycurl.CAINFO, self.cainfo)
        c.setopt(pycurl.TCP_NODELAY, 1)
        return c

    def start(self, ex: Exchange) -> None:
        """Begin an exchange; its outcome comes back from poll()."""
        c = self._handle()
        try:
            c.setopt(pycurl.URL, ex.url)
            c.setopt(pycurl.HTTPHEADER, ex.headers)
        except (pycurl.error, UnicodeEncodeError, ValueError, TypeError):
            # A NUL, a non-ASCII header or a URL libcurl cannot parse: this item's failure.
            ex.error, ex.retryable = "malformed URL", False
            self.idle.append(c)
            self.refused.append(ex)
            return
        c.setopt(pycurl.TIMEOUT_MS, max(1, int(ex.deadline * 1000)))
        c.setopt(pycurl.MAXFILESIZE_LARGE, int(ex.max_bytes))
        c.setopt(pycurl.HEADERFUNCTION, _header_callback(ex))
        c.setopt(pycurl.WRITEFUNCTION, _write_callback(ex))
        self.running[c] = ex
        self.multi.add_handle(c)

    def poll(self, timeout: float) -> list[Exchange]:
        """Move transfers along for up to `timeout` seconds; return the ones that finished."""
        done = self._drain()
        if not done and self.running:
            if any(self.multi.fdset()):
                self.multi.select(timeout)
            else:
                # Nothing to wait on yet (libcurl is between timers): sleep as it advises,
                # rather than spinning.
                wait = self.multi.timeout()
                time.sleep(min(timeout, 0.1 if wait < 0 else wait / 1000))
            done = self._drain()
        return done

    def _drain(self) -> list[Exchange]:
        done, self.refused = self.refused, []
        while True:
            ret, _ = self.multi.perform()
            if ret != pycurl.E_CALL_MULTI_PERFORM:
                break
        while True:
            queued, ok, failed = self.multi.info_read()
            for c in ok:
                done.append(self._finish(c, 0, ""))
            for c, code, message in failed:
                done.append(self._finish(c, code, message))
            if not queued:
                break
        # pycurl swallows what a callback raises: Ctrl-C in the middle of a body surfaces here.
        for ex in [*done, *self.running.values()]:
            if isinstance(ex.raised, KeyboardInterrupt | SystemExit):
                self.refused = [e for e in done if e.raised is None]
                raise ex.raised
        return done

    def _finish(self, c: pycurl.Curl, code: int, message: str) -> Exchange:
        ex = self.running.pop(c)
        self.multi.remove_handle(c)
        try:
            ex.status = c.getinfo(pycurl.RESPONSE_CODE) or ex.status
            length = c.getinfo(pycurl.CONTENT_LENGTH_DOWNLOAD_T)
            ex.content_length = length if length >= 0 else None
            if 300 <= ex.status < 400:
                ex.redirect_url = location_text(c.getinfo_raw(pycurl.REDIRECT_URL))
        except (pycurl.error, ValueError, TypeError):
            ex.status = 0
        if isinstance(ex.raised, OSError):
            ex.error, ex.retryable = "local write error", True
        elif (
            code
            and ex.status
            and ex.status != 200
            and code
            in (
                CURLE_WRITE_ERROR,
                CURLE_FILESIZE_EXCEEDED,
            )
        ):
            pass  # an error answer with a long body, cut short on purpose: the status says it
        elif code:
            if ex.capped or code == CURLE_FILESIZE_EXCEEDED:
                ex.error, ex.retryable = f"body over the cap of {ex.max_bytes} bytes", False
            else:
                ex.error, ex.retryable = curl_reason(code, message)
        # Drop the callbacks (and the exchange they hold) before the handle is reused.
        c.setopt(pycurl.WRITEFUNCTION, _discard)
        c.setopt(pycurl.HEADERFUNCTION, _discard)
        self.idle.append(c)
        return ex

    def abort(self) -> list[Exchange]:
        """Stop every transfer in flight; return their exchanges (and any not yet reported)."""
        out, self.refused = self.refused, []
        for c, ex in list(self.running.items()):
            self.multi.remove_handle(c)
            self.idle.append(c)
            out.append(ex)
        self.running.clear()
        return out

    def close(self) -> None:
        """Abort what is running and free every handle and pooled connection."""
        self.abort()
        for c in self.idle:
            c.close()
        self.idle.clear()
        self.multi.close()


def _discard(_data: bytes) -> None:
    return None


def _header_callback(ex: Exchange):
    def on_header(line: bytes) -> int | None:
        try:
            if line in (b"\r\n", b"\n"):
                ex.at_start = True  # end of a header block: a new response may follow
            elif ex.at_start and line[:5] == b"HTTP/":
                # The status line of a response (1xx interim answers come before the final
                # one). Mid-block, a line that merely starts with "HTTP/" is just a header.
                ex.header_lines = []
                parts = line.split(None, 2)
                code = parts[1] if len(parts) > 1 else b""
                ex.status = int(code) if len(code) == 3 and code.isdigit() else 0
                ex.at_start = False
            else:
                # A header, or a trailer after a chunked body: it adds to the headers the
                # checks read, it never replaces them.
                ex.at_start = False
                ex.header_lines.append(line)
        except BaseException as exc:  # pycurl would print and swallow it
            ex.raised = exc
            return 0
        return None

    return on_header


def _write_callback(ex: Exchange):
    sink = ex.sink
    cap = ex.max_bytes

    def on_body(data: bytes) -> int | None:
        try:
            size = ex.size + len(data)
            ex.size = size
            if ex.status != 200:
                if len(ex.error_head) < ERROR_HEAD:  # enough to tell a throttle by its words
                    ex.error_head += data[: ERROR_HEAD - len(ex.error_head)]
                return 0 if size > ERROR_BODY_MAX else None  # never stored
            if size > cap:
                ex.capped = True  # libcurl checks Content-Length; this covers bodies without
                return 0
            if sink is not None:
                sink.write(data)
        except BaseException as exc:  # pycurl would print and swallow it
            ex.raised = exc
            return 0
        return None

    return on_body
