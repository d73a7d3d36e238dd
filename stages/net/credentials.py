"""Credentials scoped to origins: a secret goes only to the hosts it belongs to, over https."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from stages.core.errors import ConfigError
from stages.core.origins import Origin, check_secret_origin, origin_of, parse_origins


def check_header_value(name: str, value: str) -> None:
    """Refuse CR, LF, NUL and non-ASCII in a header: a value must not inject more headers."""
    if any(c in value for c in "\r\n\0") or any(c in name for c in "\r\n\0: "):
        raise ValueError(f"header {name!r} holds a line break or NUL; refused")
    if not (name.isascii() and value.isascii()):
        raise ValueError(f"header {name!r} holds non-ASCII characters; refused")


@dataclass(frozen=True)
class Credential:
    """One secret and the origins it belongs to: a header, or a query string (Azure SAS)."""

    origins: frozenset[Origin]
    header: str | None = None  # e.g. "Authorization"
    value: str = field(default="", repr=False)  # e.g. "Token abc" or "sv=...&sig=..."
    query: bool = False
    label: str = ""  # where the secret came from (an env var name), for messages

    def __post_init__(self) -> None:
        if (self.header is None) == (not self.query):
            raise ValueError("a credential is either a header or a query string")
        if self.header is not None:
            check_header_value(self.header, self.value)
        elif any(c in self.value for c in "\r\n\0# "):
            raise ValueError("a query-string credential holds a space, '#' or a line break")
        for origin in self.origins:
            check_secret_origin(origin)

    def applies_to(self, origin: Origin) -> bool:
        """Tell whether this credential belongs to an origin."""
        return origin in self.origins


def from_env(
    env: str, origins: list[str], where: str, *, header: str | None = None, prefix: str = ""
) -> Credential:
    """Build a credential from an environment variable (never from config) for some origins."""
    secret = os.environ.get(env)
    if not secret:
        raise ConfigError(f"{where} names the environment variable {env}, which is not set")
    scoped = parse_origins(origins, where, secret=True)
    if not scoped:
        raise ConfigError(f"{where}: a secret needs the origins it belongs to; none configured")
    try:
        if header is None:
            return Credential(scoped, value=secret.lstrip("?"), query=True, label=env)
        return Credential(scoped, header=header, value=prefix + secret, label=env)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


class Credentials:
    """The credentials of one run; applies the right ones to each request, none elsewhere."""

    def __init__(self, creds: list[Credential] | tuple[Credential, ...] = ()):
        self.creds = tuple(creds)

    def __bool__(self) -> bool:
        return bool(self.creds)

    def __repr__(self) -> str:
        return f"Credentials({len(self.creds)} scoped secret(s))"

    def scoped(self, url: str) -> list[str]:
        """Return the labels of the credentials that belong to this URL's origin."""
        try:
            origin = origin_of(url)
        except ValueError:
            return []
        return [c.label or "a credential" for c in self.creds if c.applies_to(origin)]

    def apply(self, url: str) -> tuple[str, list[str]]:
        """Return the URL to request and the extra header lines for it (none for a URL
        without an origin: no credential belongs to it, and the transport refuses it)."""
        if not self.creds:
            return url, []
        try:
            origin = origin_of(url)
        except ValueError:
            return url, []
        headers = []
        for cred in self.creds:
            if not cred.applies_to(origin):
                continue
            if cred.query:
                parts = urlsplit(url)
                query = f"{parts.query}&{cred.value}" if parts.query else cred.value
                url = urlunsplit(parts._replace(query=query, fragment=""))
            else:
                headers.append(f"{cred.header}: {cred.value}")
        return url, headers
