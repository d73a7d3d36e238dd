"""Per-URL download outcomes in SQLite, so an interrupted run resumes where it stopped."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

# Statuses: ok; missing (404/410) and corrupt (bad bytes at the source) are permanent;
# failed is transient (connection errors, 429, 5xx, auth) and is retried by the next run.
PERMANENT = {"missing", "corrupt"}


@dataclass
class Result:
    """The outcome for one URL."""

    url: str
    status: str
    reason: str = ""
    sha256: str | None = None
    bytes: int | None = None
    http_status: int | None = None
    attempts: int = 0

    @property
    def transient(self) -> bool:
        """Tell whether a later run should try again."""
        return self.status == "failed"


class Ledger:
    """Per-URL outcomes that survive crashes (SQLite, WAL), so re-runs resume."""

    COLUMNS = "url, status, reason, sha256, bytes, http_status, attempts"

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # Queued experiments may share the cache: wait for each other's writes.
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=120)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS results (url TEXT PRIMARY KEY, status TEXT, reason TEXT,"
            " sha256 TEXT, bytes INTEGER, http_status INTEGER, attempts INTEGER)"
        )
        self.lock = threading.Lock()

    def get(self, url: str) -> Result | None:
        """Return the recorded result for a URL."""
        with self.lock:
            row = self.db.execute(
                f"SELECT {self.COLUMNS} FROM results WHERE url=?", (url,)
            ).fetchone()
        return Result(*row) if row else None

    def all(self) -> dict[str, Result]:
        """Return every recorded result, by URL."""
        with self.lock:
            rows = self.db.execute(f"SELECT {self.COLUMNS} FROM results").fetchall()
        return {row[0]: Result(*row) for row in rows}

    def put(self, *results: Result) -> None:
        """Record results in one transaction."""
        rows = [
            (r.url, r.status, r.reason, r.sha256, r.bytes, r.http_status, r.attempts)
            for r in results
        ]
        with self.lock:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?)", rows)
            self.db.execute("COMMIT")

    def close(self) -> None:
        """Close the database."""
        self.db.close()
