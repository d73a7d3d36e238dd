"""The real `tator` client with what it lacks: a deadline, a size cap and retries on every call.

tator 1.8 builds its methods from the server's /schema and sends every request through one
`requests.Session` with no timeout and no retries. Here that session gets an adapter that
retries 429/5xx and connection errors with backoff, honouring Retry-After up to a cap
(urllib3's `Retry`), gives every attempt a connect/read timeout and an overall deadline, and
stops reading a body at a size cap. The schema download, which `tator.get_api` makes with a
bare `requests.get`, goes through the same session.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator

import requests
import requests.auth
import tator
import urllib3
import yaml
from requests.adapters import HTTPAdapter
from tator.exceptions import ApiException
from tator.openapi.client import OpenAPIClient, _ApiClientShim
from tator.openapi.models import ModelFactory
from urllib3.util.retry import Retry

from stages.core.config import FetchConf
from stages.core.errors import MetadataError, StageError
from stages.core.origins import origin_of, redact

log = logging.getLogger("stages.sources.tator")

SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
RETRY_STATUS = (429, 500, 502, 503, 504)
# How Tator's own exception handler words a throttle and an auth failure (both as 400).
THROTTLED = re.compile(r"Request was throttled\.(?: Expected available in (\d+(?:\.\d+)?) second)?")
AUTH_400 = re.compile(r"Invalid token\.|Authentication credentials were not provided\.")
CHUNK = 1 << 16


class TokenRejected(StageError):
    """Raise when Tator refuses the token (401 or 403)."""


class ResponseTooLarge(requests.exceptions.RequestException):
    """A response body passed the configured cap."""


class DeadlineExceeded(requests.exceptions.Timeout):
    """A response took longer than the attempt deadline, however fast it trickled."""


class BoundedAdapter(HTTPAdapter):
    """An adapter whose every request has a timeout, a deadline and a body-size cap."""

    def __init__(self, *, timeout: tuple[float, float], deadline: float, max_bytes: int, retry):
        self.timeout, self.deadline, self.max_bytes = timeout, deadline, max_bytes
        super().__init__(max_retries=retry, pool_connections=1, pool_maxsize=4)

    def send(self, request, stream=False, timeout=None, **kwargs):
        """Send with the default timeout; read the body here, under the cap and deadline."""
        started = time.monotonic()
        resp = super().send(request, stream=True, timeout=timeout or self.timeout, **kwargs)
        if stream:
            return resp
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            resp.close()
            raise ResponseTooLarge(f"response of {declared} bytes is over the cap")
        chunks, size = [], 0
        try:
            while True:
                # read1 returns what has arrived, so a drip cannot hold off the deadline.
                chunk = _read1(resp.raw)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_bytes:
                    raise ResponseTooLarge(f"response passed {self.max_bytes} bytes")
                if time.monotonic() - started > self.deadline:
                    raise DeadlineExceeded(f"response took over {self.deadline:g} s")
                chunks.append(chunk)
        except BaseException:
            resp.close()
            raise
        resp._content = b"".join(chunks)  # what requests does itself when not streaming
        return resp


def _read1(raw) -> bytes:
    """Read the next decoded bytes of a body; urllib3's errors as requests' (as iter_content)."""
    try:
        return raw.read1(CHUNK, decode_content=True)
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(str(exc)) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise requests.exceptions.ChunkedEncodingError(str(exc)) from None


def session_for(cfg: FetchConf, max_bytes: int) -> requests.Session:
    """Return a session with bounded retries, timeouts, a deadline and a size cap."""
    retry = Retry(
        total=cfg.retries,
        connect=cfg.retries,
        read=cfg.retries,
        status=cfg.retries,
        other=0,
        allowed_methods=frozenset({"GET"}),
        status_forcelist=RETRY_STATUS,
        backoff_factor=cfg.backoff,
        backoff_max=cfg.backoff_max,
        backoff_jitter=cfg.backoff / 2,
        respect_retry_after_header=True,
        retry_after_max=int(cfg.retry_after_max),
        raise_on_status=False,  # the last 429/5xx reaches the client, which raises ApiException
        redirect=0,  # a token must never follow a redirect anywhere
    )
    adapter = BoundedAdapter(
        timeout=(cfg.connect_timeout, cfg.low_speed_time),
        deadline=cfg.attempt_timeout,
        max_bytes=max_bytes,
        retry=retry,
    )
    session = requests.Session()
    session.max_redirects = 0
    for prefix in ("https://", "http://"):
        session.mount(prefix, adapter)
    return session


class TokenAuth(requests.auth.AuthBase):
    """Attach `Authorization: Token` to requests for one origin, and to no other."""

    def __init__(self, token: str, host: str):
        self.header, self.origin = f"Token {token}", origin_of(host)

    def __repr__(self) -> str:
        return f"TokenAuth({self.origin[0]}://{self.origin[1]}:{self.origin[2]})"

    def __call__(self, request):
        if origin_of(request.url) == self.origin:
            request.headers["Authorization"] = self.header
        return request


class Client(OpenAPIClient):
    """tator's dynamic client, built from a schema fetched through our bounded session."""

    def __init__(self, host: str, token: str, session: requests.Session):
        # tator.get_api does the same with a bare requests.get and a fresh session.
        url = f"{host}/schema/"  # the server's route (/schema answers a 301 to it)
        resp = session.get(url)
        if resp.status_code != 200:
            raise MetadataError(f"Tator schema {redact(url)}: HTTP {resp.status_code}")
        # What OpenAPIClient._load_schema does, with libyaml's parser: Tator's schema is about
        # 1 MB of YAML, which the pure-Python parser takes seconds over.
        try:
            self.schema = yaml.load(resp.text, Loader=SafeLoader) or {}
        except yaml.YAMLError as exc:
            raise MetadataError(f"Tator schema {redact(url)} is not YAML/JSON: {exc}") from None
        if not isinstance(self.schema, dict) or not isinstance(self.schema.get("paths"), dict):
            raise MetadataError(
                f"Tator schema {redact(url)} has no `paths`: not an OpenAPI document"
            )
        self._endpoints = self._parse_schema()
        self._factory = ModelFactory(self.schema)
        self.base_url = host.rstrip("/")
        self.session = session
        self._cache = {}
        self._debug = False
        self.api_client = _ApiClientShim(self)
        # An auth object rather than a session header: it goes to Tator's origin only, and it
        # keeps requests from reading ~/.netrc credentials instead.
        session.auth = TokenAuth(token, host)
        tator.models._set_factory(self._factory)


class Api:
    """The calls fetch@tator makes, with errors turned into one clear message each."""

    def __init__(
        self,
        host: str,
        token: str,
        token_env: str,
        cfg: FetchConf,
        max_bytes: int,
        sleep=time.sleep,
    ):
        self.host, self.token_env, self.cfg, self.sleep = host, token_env, cfg, sleep
        self.session = session_for(cfg, max_bytes)
        self.calls = 0  # API calls made (retries not counted)
        self._lock = threading.Lock()
        self.client = self._guard("/schema", lambda: Client(host, token, self.session))

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()

    def _guard(self, what: str, call):
        try:
            return self._throttled(call)
        except ApiException as exc:
            status = exc.status
            if status in (401, 403) or (status == 400 and AUTH_400.search(exc.body or "")):
                raise TokenRejected(
                    f"Tator at {self.host} refused the token in ${self.token_env} "
                    f"(HTTP {status} on {what}): check that it is current and has access "
                    "to the project"
                ) from None
            raise MetadataError(f"Tator {what}: HTTP {status}{_detail(exc)}") from None
        except ValueError as exc:  # a body that is not JSON (requests' JSONDecodeError too)
            raise MetadataError(f"Tator {what}: malformed response ({_short(exc)})") from None
        except requests.exceptions.RequestException as exc:
            raise MetadataError(f"Tator {what}: {type(exc).__name__}: {_short(exc)}") from None

    def _throttled(self, call):
        """Run a call, waiting out Tator's throttle, which its views answer with a 400
        ("Request was throttled. Expected available in N seconds.") that urllib3 cannot
        tell from a real 400; 429s and 5xx are retried by the session's adapter."""
        for attempt in range(self.cfg.retries + 1):
            try:
                return call()
            except ApiException as exc:
                found = THROTTLED.search(exc.body or "") if exc.status == 400 else None
                if found is None or attempt == self.cfg.retries:
                    raise
                wait = float(found.group(1) or 1)
                backoff = min(self.cfg.backoff * 2**attempt, self.cfg.backoff_max)
                self.sleep(min(max(wait, backoff), self.cfg.retry_after_max))
        raise AssertionError("unreachable")

    def call(self, op: str, /, *args, **kwargs):
        """Call one API method by name; raise a clear error for any failure."""
        with self._lock:
            self.calls += 1
        what = f"{op}{tuple(args)}"
        return self._guard(what, lambda: getattr(self.client, op)(*args, **kwargs))

    def by_id(self, op: str, /, *args, page_size: int, **filters) -> Iterator[dict]:
        """Yield every object of a list sorted by id, paging with `after` (never the paginator).

        Localizations and states come sorted by id, so `after=<last id>` with an explicit
        page size never skips or repeats; a short (or empty) page ends the listing.
        """
        after = None
        while True:
            page = self.call(
                op,
                *args,
                **filters,
                start=0,
                stop=page_size,
                **({} if after is None else {"after": after}),
            )
            _check_page(op, page, after)
            yield from page
            if len(page) < page_size:
                return
            after = page[-1]["id"]

    def by_window(self, op: str, /, *args, page_size: int, **filters) -> list[dict]:
        """Return every object of a list ordered by something other than id (media: name),
        in start/stop windows, sorted by id; a changed listing is refused, not half-read."""
        out, start = [], 0
        while True:
            page = self.call(op, *args, **filters, start=start, stop=start + page_size)
            _check_page(op, page, None, ordered=False)
            out.extend(page)
            if len(page) < page_size:
                break
            start += page_size
        ids = [obj["id"] for obj in out]
        if len(set(ids)) != len(ids):
            raise MetadataError(f"Tator {op}: the listing changed while it was read; re-run")
        return sorted(out, key=lambda obj: obj["id"])


def _check_page(name: str, page, after, *, ordered: bool = True) -> None:
    if not isinstance(page, list) or not all(
        isinstance(obj, dict) and isinstance(obj.get("id"), int) for obj in page
    ):
        raise MetadataError(f"Tator {name}: expected a list of objects with integer ids")
    if ordered:
        ids = [obj["id"] for obj in page]
        if ids != sorted(set(ids)) or (after is not None and ids and ids[0] <= after):
            raise MetadataError(f"Tator {name}: ids are not increasing; cannot page by id")


def _short(exc: BaseException) -> str:
    return redact(str(exc).splitlines()[0] if str(exc) else "")[:200]


def _detail(exc: ApiException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, bytes | str) and body:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        return f": {text[:200]}"
    return ""
