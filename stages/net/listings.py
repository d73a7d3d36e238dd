"""Small cached JSON documents (an archive's member list), kept apart from the ledger.

Each document lives in `<cache>/listings/<sha256 of its key>.json` beside its key, written
under a part-file name then renamed (a reader sees a whole document or none), and at most
`max_bytes` long. A document that is missing, unreadable, too large or filed under another
key reads as absent: the caller derives it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

from stages.net.cache import ObjectCache

log = logging.getLogger("stages.net.listings")

MAX_BYTES = 64 << 20  # a million member names fit


class Listings:
    """Get and put small JSON documents by key, in the cache directory."""

    def __init__(self, cache: ObjectCache, max_bytes: int = MAX_BYTES):
        self.cache, self.max_bytes = cache, max_bytes
        self.dir = cache.root / "listings"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> str:
        """Return where the document for a key is kept."""
        return f"{self.dir}/{hashlib.sha256(key.encode()).hexdigest()}.json"

    def get(self, key: str) -> Any | None:
        """Return the document stored under a key, or None."""
        try:
            with open(self.path(key), "rb") as fh:
                data = fh.read(self.max_bytes + 1)
            if len(data) > self.max_bytes:
                return None
            doc = json.loads(data)
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("key") != key or "value" not in doc:
            return None
        return doc["value"]

    def put(self, key: str, value: Any) -> bool:
        """Store a JSON-serialisable document under a key; return False if it is too large."""
        data = json.dumps({"key": key, "value": value}, separators=(",", ":")).encode()
        if len(data) > self.max_bytes:
            log.debug("listing for %s not kept: %d bytes", key, len(data))
            return False
        tmp = self.cache.part_file()  # a killed run's leftover goes with the cache's parts
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.path(key))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return True
