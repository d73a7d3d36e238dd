"""The real `tator` client with what it lacks: a timeout, a deadline, a size cap and retries.

tator 1.8 builds its methods from the server's /schema and sends every request through one
`requests.Session` with no timeout and no retries. Here that session's adapter gives every
attempt a connect/read timeout and a deadline, and reads each body under a size cap; `Api`
retries what the shared policy (`stages.net.retry`) calls transient (408, 425, 429, 5xx),
Tator's "Request was throttled" 400 and broken or stalled bodies, with its backoff (honouring
Retry-After up to fetch.retry_after_max), each retry a fresh attempt.
urllib3's `Retry` is not used for statuses: before retrying it drains the refused answer's
body with no cap and no deadline, so an endless 503 would hang the stage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import requests
import requests.auth
import tator
import urllib3
import yaml
from requests.adapters import HTTPAdapter
from tator.exceptions import ApiException
from tator.openapi.client import OpenAPIClient, _ApiClientShim
from tator.openapi.models import ModelFactory

from stages.core.config import FetchConf
from stages.core.errors import MetadataError
from stages.core.origins import redact
from stages.net.credentials import Credentials
from stages.net.retry import Action, Policy, SessionBlocked, Transient
from stages.sources.tator.conf import THROTTLED

log = logging.getLogger("stages.sources.tator")

SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# How Tator's own exception handler words an auth failure (a 400, like a throttle).
AUTH_400 = r"Invalid token\.|Authentication credentials were not provided\."
CHUNK = 1 << 16


class TokenRejected(SessionBlocked):
    """Raise when Tator refuses the token (401 or 403)."""


class ResponseTooLarge(requests.exceptions.RequestException):
    """Raise when a response body passes the configured cap."""


class DeadlineExceeded(requests.exceptions.Timeout):
    """Raise when a response takes longer than the attempt deadline, however it trickles."""


class BoundedAdapter(HTTPAdapter):
    """Give every request a timeout and a deadline, and read its body under a size cap."""

    def __init__(
        self, *, timeout: tuple[float, float], deadline: float, max_bytes: int, pool: int = 4
    ):
        self.timeout, self.deadline, self.max_bytes = timeout, deadline, max_bytes
        super().__init__(max_retries=0, pool_connections=1, pool_maxsize=pool)

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
    """Read the next decoded bytes of a body, with urllib3's errors as requests' errors."""
    try:
        return raw.read1(CHUNK, decode_content=True)
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(str(exc)) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise requests.exceptions.ChunkedEncodingError(str(exc)) from None


def session_for(cfg: FetchConf, max_bytes: int, pool: int = 4) -> requests.Session:
    """Return a session whose requests are bounded in time and size and never redirected."""
    adapter = BoundedAdapter(
        timeout=(cfg.connect_timeout, cfg.low_speed_time),
        deadline=cfg.attempt_timeout,
        max_bytes=max_bytes,
        pool=pool,
    )
    session = requests.Session()
    session.max_redirects = 0  # a token must never follow a redirect anywhere
    for prefix in ("https://", "http://"):
        session.mount(prefix, adapter)
    return session


class ScopedAuth(requests.auth.AuthBase):
    """Attach the run's credentials that belong to a request's origin, and no others."""

    def __init__(self, creds: Credentials):
        self.creds = creds

    def __repr__(self) -> str:
        return f"ScopedAuth({self.creds!r})"

    def __call__(self, request):
        # The downloader's own scoping (stages.net.credentials): https only, loopback aside.
        request.url, lines = self.creds.apply(request.url)
        for line in lines:
            name, _, value = line.partition(": ")
            request.headers[name] = value
        return request


def _no_auth(request):
    """Send a request without credentials (and keep requests from reading ~/.netrc)."""
    return request


class Client(OpenAPIClient):
    """Build tator's dynamic client from a schema fetched through our bounded session."""

    def __init__(self, host: str, schema: dict, session: requests.Session, creds: Credentials):
        # What tator.get_api and OpenAPIClient.__init__ do, minus their bare requests.get.
        self.schema = schema
        self._endpoints = self._parse_schema()
        self._factory = ModelFactory(self.schema)
        self.base_url = host
        self.session = session
        self._cache = {}
        self._debug = False
        self.api_client = _ApiClientShim(self)
        # An auth object rather than a session header: each credential goes to its own
        # origins only, and requests does not read ~/.netrc credentials instead.
        session.auth = ScopedAuth(creds)
        tator.models._set_factory(self._factory)


class Api:
    """Make the calls fetch@tator needs, each retried and bounded, failing with one message."""

    def __init__(
        self,
        host: str,
        creds: Credentials,
        token_env: str,
        cfg: FetchConf,
        max_bytes: int,
        sleep: Callable[[float], None] = time.sleep,
        pool: int = 4,
    ):
        self.host, self.token_env, self.cfg, self.sleep = host, token_env, cfg, sleep
        # Tator's throttle and auth failures come as 400s worded in the body.
        self.policy = Policy.from_conf(cfg, throttled=THROTTLED, blocked=AUTH_400)
        self.session = session_for(cfg, max_bytes, pool)  # pool: connections kept per host
        self.calls = 0  # API calls made (retries not counted)
        self._lock = threading.Lock()
        try:
            schema = self.retrying("/schema/", self._schema)
            self.client = Client(host, schema, self.session, creds)
        except BaseException:
            self.session.close()
            raise

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()

    def _schema(self) -> dict:
        """Fetch and parse the OpenAPI document (YAML; JSON parses too)."""
        url = f"{self.host}/schema/"  # the server's route (/schema answers a 301 to it)
        resp = self.session.get(url, auth=_no_auth)
        if resp.status_code != 200:
            raise ApiException(status=resp.status_code, reason="schema", http_resp=resp)
        # libyaml's parser: Tator's schema is about 1 MB of YAML, which pure Python takes
        # seconds over.
        try:
            schema = yaml.load(resp.text, Loader=SafeLoader)
        except yaml.YAMLError as exc:
            raise MetadataError(f"Tator schema {redact(url)} is not YAML/JSON: {exc}") from None
        if not isinstance(schema, dict) or not isinstance(schema.get("paths"), dict):
            raise MetadataError(f"Tator schema {redact(url)} has no `paths`: not OpenAPI")
        if not all(isinstance(v, dict) for v in schema["paths"].values()):
            raise MetadataError(f"Tator schema {redact(url)}: a path item is not a mapping")
        return schema

    def call(self, op: str, /, *args, **kwargs):
        """Call one API method by name; raise a clear error for any failure."""
        with self._lock:
            self.calls += 1
        what = f"{op}{tuple(args)}"
        try:
            method = getattr(self.client, op)
        except AttributeError:
            raise MetadataError(
                f"Tator's schema has no operation {op}: not a Tator server?"
            ) from None
        return self.retrying(what, lambda: method(*args, **kwargs))

    def retrying(self, what: str, call):
        """Run a call; retry what a new attempt may fix; turn failures into one message.

        `call` may make several requests (an upload does); each retry runs it all again."""

        def attempt():
            try:
                return call()
            except ApiException as exc:
                raise self._refusal(what, exc) from None
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.Timeout,  # DeadlineExceeded too
            ) as exc:
                raise Transient(f"{type(exc).__name__}: {_short(exc)}") from None
            except ValueError as exc:  # a body that is not JSON (requests' JSONDecodeError too)
                raise MetadataError(f"Tator {what}: malformed response ({_short(exc)})") from None
            except requests.exceptions.RequestException as exc:  # too large, redirected
                raise MetadataError(f"Tator {what}: {type(exc).__name__}: {_short(exc)}") from None
            except TypeError as exc:  # the client refused an argument its schema lacks
                raise MetadataError(f"Tator {what}: the server's schema differs: {exc}") from None

        try:
            return self.policy.run(attempt, sleep=self.sleep, what=f"Tator {what}")
        except Transient as exc:
            error = f"{exc.reason} (after {exc.attempts} attempt(s))"
            raise MetadataError(f"Tator {what}: {error}") from None

    def _refusal(self, what: str, exc: ApiException) -> Transient:
        """Return a refusal worth retrying as a Transient; raise the error it is otherwise."""
        status, body = exc.status, exc.body if isinstance(exc.body, str) else ""
        retry_after = (exc.headers or {}).get("Retry-After")
        verdict = self.policy.judge(status, retry_after, body, credentialed=True)
        if verdict.action is Action.STOP:
            raise TokenRejected(
                f"Tator at {self.host} refused the token in ${self.token_env} "
                f"(HTTP {status} on {what}): check that it is current and has access "
                "to the project"
            ) from None
        if verdict.action is Action.RETRY:
            reason = "throttled (HTTP 400)" if verdict.throttled else f"HTTP {status}"
            return Transient(reason, verdict.wait)
        raise MetadataError(f"Tator {what}: HTTP {status}: {_quote(body)}") from None

    def by_id(self, op: str, /, *args, page_size: int, **filters) -> Iterator[dict]:
        """Yield every object of a list sorted by id, paging with `after` (not the paginator)."""
        # `after=<last id>` with an explicit page size never skips or repeats when the list
        # is ordered by id; a short (or empty) page ends it.
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


def _check_page(op: str, page, after) -> None:
    """Refuse a page that is not a list of objects with increasing integer ids."""
    if not isinstance(page, list) or not all(
        isinstance(obj, dict) and type(obj.get("id")) is int for obj in page
    ):
        raise MetadataError(f"Tator {op}: expected a list of objects with integer ids")
    ids = [obj["id"] for obj in page]
    if ids != sorted(set(ids)) or (after is not None and ids and ids[0] <= after):
        raise MetadataError(f"Tator {op}: ids are not increasing; cannot page by id")


def _quote(text: str) -> str:
    """Return server text safe to print: escaped, and short."""
    return ascii(text[:200])


def _short(exc: BaseException) -> str:
    """Return an exception's first line, escaped and short (URLs here hold no secret)."""
    return _quote(str(exc).splitlines()[0] if str(exc) else "")
