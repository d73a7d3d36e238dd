"""Origins (scheme, host, port) of URLs: what a credential is scoped to, and log-safe URLs."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from stages.core.errors import ConfigError

Origin = tuple[str, str, int]  # scheme, lower-case host, port
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> Origin:
    """Return a URL's (scheme, host, port); raise ValueError if it has none."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an http(s) URL with a host: {redact(url)!r}")
    port = parts.port  # raises ValueError for a port out of range
    return scheme, parts.hostname.lower(), DEFAULT_PORTS[scheme] if port is None else port


def is_loopback(host: str) -> bool:
    """Tell whether a host name is loopback (localhost or 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def redact(url: str) -> str:
    """Return a URL without user info, query and fragment (they may hold a secret), for logs."""
    base = url.split("?", 1)[0].split("#", 1)[0]
    scheme, sep, rest = base.partition("://")
    if sep:
        netloc, slash, path = rest.partition("/")
        base = f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}"
    return base


def check_secret_origin(origin: Origin) -> None:
    """Refuse an origin a secret may not go to: plain http, unless to loopback (stand-ins)."""
    scheme, host, _ = origin
    if scheme != "https" and not is_loopback(host):
        raise ValueError(
            f"a credential may go to https origins only (plain http to loopback for "
            f"local stand-ins), not {scheme}://{host}"
        )


def parse_origins(values: list[str], where: str, *, secret: bool = False) -> frozenset[Origin]:
    """Parse configured origins like `https://host[:port]`; refuse paths and queries, and for
    a secret's origins, plain http (loopback aside)."""
    out = set()
    for value in values:
        parts = urlsplit(value)
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ConfigError(f"{where}: an origin is scheme://host[:port] only, not {value!r}")
        try:
            origin = origin_of(value)
            if secret:
                check_secret_origin(origin)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        out.add(origin)
    return frozenset(out)
