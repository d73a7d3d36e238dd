"""Checks that a downloaded body is whole: GCS md5, JPEG/PNG structure, a full decode."""

from __future__ import annotations

import base64
import binascii
import io

from stages.core.origins import redact


def goog_md5(header: str | None) -> str | None:
    """Return the hex MD5 a GCS `x-goog-hash` header promises, if any."""
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "md5" and value:
            try:
                return base64.b64decode(value + "=" * (-len(value) % 4), validate=True).hex()
            except (ValueError, binascii.Error):
                return None
    return None


def check_structure(kind: str, head: bytes, tail: bytes) -> str | None:
    """Return why bytes are not a whole JPEG/PNG, or None if they look complete."""
    if kind == "jpeg":
        if not head.startswith(b"\xff\xd8"):
            return "not a JPEG (no SOI marker)"
        # Some cameras pad after EOI; the marker must still be there.
        if not tail.rstrip(b"\x00\r\n\x20\xff").endswith(b"\xff\xd9") and b"\xff\xd9" not in tail:
            return "truncated JPEG (no EOI marker)"
    elif kind == "png":
        if not head.startswith(b"\x89PNG\r\n\x1a\n"):
            return "not a PNG (bad signature)"
        if b"IEND" not in tail[-16:]:
            return "truncated PNG (no IEND chunk)"
    return None


def kind_of(url: str) -> str:
    """Guess the payload kind from the URL's extension."""
    path = redact(url).lower()
    if path.endswith((".jpg", ".jpeg")):
        return "jpeg"
    if path.endswith(".png"):
        return "png"
    return "any"


def decode_check(source: str | bytes) -> str | None:
    """Fully decode an image (a path or its bytes); return why it failed, or None."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            im.load()
    except Exception as exc:  # Pillow raises many types for bad data
        return f"undecodable image: {type(exc).__name__}"
    return None
