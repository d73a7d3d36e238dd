"""The minimal HTTP/1.1 client against a real server on loopback."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stages.http import HttpClient

BODY = bytes(range(256)) * 1000


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.peers.add(self.client_address)
        if self.path == "/fixed":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(BODY), 70_000):
                part = BODY[i : i + 70_000]
                self.wfile.write(f"{len(part):x};ext=1\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        elif self.path == "/until-close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(BODY)
            self.close_connection = True
        elif self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/fixed")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/then-hang-up":
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            self.close_connection = True  # without saying so: the client's copy goes stale
        else:
            self.send_error(404)


@pytest.fixture
def srv():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.peers = set()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def fetch(client, url):
    resp = client.get(url)
    out = bytearray()
    while chunk := resp.read(50_000):
        out += chunk
    resp.release(True)
    return resp.status, bytes(out)


def test_framings_and_keep_alive(srv):
    server, base = srv
    client = HttpClient(2, 2)
    assert fetch(client, f"{base}/fixed") == (200, BODY)
    assert fetch(client, f"{base}/chunked") == (200, BODY)
    assert fetch(client, f"{base}/fixed") == (200, BODY)
    assert len(server.peers) == 1  # one connection served all three
    assert fetch(client, f"{base}/until-close") == (200, BODY)
    assert fetch(client, f"{base}/redirect") == (200, BODY)
    assert len(server.peers) == 2  # a new connection after the server closed one
    client.close()


def test_stale_keep_alive_is_reopened_once(srv):
    server, base = srv
    client = HttpClient(2, 2)
    assert fetch(client, f"{base}/then-hang-up") == (200, b"ok")
    assert fetch(client, f"{base}/fixed") == (200, BODY)
    assert len(server.peers) == 2
    status, _ = fetch(client, f"{base}/missing")
    assert status == 404
    client.close()


def test_unreachable_host_raises_oserror():
    client = HttpClient(0.5, 0.5)
    with pytest.raises(OSError):
        client.get("http://127.0.0.1:9/")
