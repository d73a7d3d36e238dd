"""The Tator stand-in's server: the request front door and the stand-in that composes the rest.

Every /rest request passes the checks a real deployment makes before its views run: an
`Authorization: Token` header (a wrong or missing token is a 403, a 401 as under Keycloak, or
Tator's own 400, by `auth_status`), then the throttle. A storm switch answers 429 (with
Retry-After, as a proxy or DRF's own handler would), Tator's 400 `Request was throttled.
Expected available in N seconds.` (its views turn DRF's Throttled into a 400 without
Retry-After: ../shared/notes/real-services.md) or a 5xx, for a while. JSON is gzipped when the
client accepts it, as the server's list views do; fault plans truncate, cut or stall bodies,
and `delay` adds a round trip to every response. /schema needs no auth, as on the server.
"""

from __future__ import annotations

import fnmatch
import gzip
import json
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs

from standins.http import Handler, Standin
from standins.tator.frames import FrameRoutes, Frames
from standins.tator.imports import Creation, ImportRoutes, Uploads
from standins.tator.model import TatorData, generate
from standins.tator.rest import BadRequest, NotFound, Queries, RestRoutes
from standins.tator.schema import schema


class _TatorHandler(RestRoutes, FrameRoutes, ImportRoutes, Handler):
    """Answer one request: /schema and presigned URLs, then /rest behind the server's checks."""

    server_version = "tator-standin/1.0"

    def json(self, status: int, obj, extra=()) -> None:
        """Send JSON (gzipped when asked), with this request's body fault if any."""
        # Faults: truncate, corrupt (cut, with a matching length), stall.
        body = json.dumps(obj).encode()
        kind, arg = (getattr(self, "fault", None) if 200 <= status < 300 else None) or ("ok", None)
        if kind == "corrupt":
            body = body[: len(body) * 6 // 10]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if "gzip" in self.headers.get("Accept-Encoding", ""):  # as the server's list views
            body = gzip.compress(body, mtime=0)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        for key, value in extra:
            self.send_header(key, value)
        self.end_headers()
        if kind == "truncate":
            self.close_connection = True
            self.wfile.write(body[: len(body) // 2])
        elif kind == "stall":
            self.close_connection = True
            self.wfile.write(body[:16])
            self.wfile.flush()
            self.server.standin._stopping.wait(arg)
        else:
            self.wfile.write(body)

    def route(self, path: str, query: str, head: bool) -> None:
        standin: TatorStandin = self.server.standin
        self.fault = None
        if standin.delay:
            time.sleep(standin.delay)
        if path.rstrip("/") == "/schema":
            return self.json(200, standin.schema)
        if path.startswith("/presigned/"):
            return self._presigned(path, query, head)
        if path.startswith("/upload/") and self.command == "PUT":
            return self._put_part(standin, path, query)
        if not path.startswith("/rest/"):
            return self.simple(404, b"not found", head)
        try:
            body = self.read_body(limit=64 << 20) if self.command == "POST" else b""
            self.body = json.loads(body) if body else None
        except ValueError:
            return self.json(400, {"message": "the request body is not JSON"})
        if self.headers.get("Authorization") != f"Token {standin.token}":
            if self.headers.get("Authorization"):
                detail = "Invalid token."
            else:
                detail = "Authentication credentials were not provided."
            if standin.auth_status == 400:  # the server's own exception handler
                return self.json(400, {"message": detail, "details": "None"})
            return self.json(standin.auth_status, {"detail": detail})
        storm = standin.storming(path.lstrip("/"))
        if storm is not None:
            kind, retry_after = storm
            if kind == 429:  # a proxy or DRF's own handler in front of the views
                return self.json(
                    429,
                    {"detail": "Request was throttled."},
                    [("Retry-After", f"{retry_after:g}")],
                )
            if kind == 400:  # Tator's views turn DRF's Throttled into a 400
                message = f"Request was throttled. Expected available in {retry_after:g} seconds."
                return self.json(400, {"message": message, "details": "None"})
            return self.json(kind, {"message": "Server error."})
        fault = self.fault = standin.faults.take(path.lstrip("/"))
        if self.pre_fault(fault, head):
            return None
        q = parse_qs(query, keep_blank_values=True)
        parts = path.split("/")[2:]
        try:
            return self._rest(standin, parts, q, head, fault)
        except BadRequest as exc:
            return self.json(400, {"message": str(exc)})
        except NotFound as exc:
            return self.json(404, {"message": str(exc)})
        except (ValueError, IndexError):
            return self.json(400, {"message": "bad request"})


class TatorStandin(Queries, Frames, Uploads, Creation, Standin):
    """Local Tator server for one project (id 1) holding `data`, requiring `token`."""

    handler = _TatorHandler
    name = "tator-standin"

    def __init__(
        self,
        data: TatorData | None = None,
        *,
        token: str = "standin-token",
        host: str = "127.0.0.1",
        port: int = 0,
        delay: float = 0.0,
        auth_status: int = 403,
        frame_redirect: str | None = None,
        tls=None,
    ):
        super().__init__(host=host, port=port, tls=tls)
        self.data = data or generate()
        self.token = token
        self.delay = delay
        self.auth_status = auth_status
        self.frame_redirect = frame_redirect
        self.schema = schema()
        self.media_by_id = {m["id"]: m for m in self.data.media}
        self._storm: tuple[float, int, float, str] | None = None
        self.storm_hits = 0
        self._frames: dict[tuple, tuple[bytes, str]] = {}
        self._frames_lock = threading.Lock()
        self.frames_served = 0
        # Uploads: presigned keys, their parts, and the stored files' digests by media id.
        self.write_lock = threading.Lock()
        self.uploads: dict[str, dict] = {}
        self.blobs: dict[int, dict] = {}
        self.transcodes = 0  # Transcode requests received
        self.hold_after: int | None = None  # hold Transcode requests after this many
        self.release = threading.Event()
        # make demo's switches: media ids from content (sequences differ with the order of
        # parallel uploads; the demo's outputs must hash the same everywhere), and labels put
        # on each new media as an annotator would.
        self.stable_ids = False
        self.annotate = False

    # -- switches

    def storm(
        self, status: int = 429, seconds: float = 1.0, retry_after: float = 1.0, paths: str = "*"
    ) -> None:
        """Answer /rest requests matching `paths` with 429, a throttle 400 or a 5xx a while."""
        self._storm = (time.monotonic() + seconds, status, retry_after, paths)

    def storming(self, path: str) -> tuple[int, float] | None:
        """Return (status, retry_after) while a storm lasts over this path; count the hit."""
        storm = self._storm
        if storm is None or time.monotonic() >= storm[0] or not fnmatch.fnmatch(path, storm[3]):
            return None
        with self._lock:
            self.storm_hits += 1
        return storm[1], storm[2]

    # -- state kept between runs (make demo)

    def save(self, path) -> None:
        """Write the project's rows and stored files' digests to a JSON file."""
        with self.write_lock:
            doc = {
                "media": self.data.media,
                "localizations": self.data.localizations,
                "states": self.data.states,
                "sections": self.data.sections,
                "blobs": {str(k): v for k, v in sorted(self.blobs.items())},
            }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{path}.tmp")
        tmp.write_text(json.dumps(doc, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(path)

    def load(self, path) -> None:
        """Read what save() wrote, if the file exists."""
        if not Path(path).is_file():
            return
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        for key in ("media", "localizations", "states", "sections"):
            setattr(self.data, key, doc[key])
        self.blobs = {int(k): v for k, v in doc["blobs"].items()}
        self.media_by_id = {m["id"]: m for m in self.data.media}
