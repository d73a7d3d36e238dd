"""Per-URL download outcomes in SQLite, so an interrupted run resumes where it stopped."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

BUSY_WAIT = 600.0  # seconds to wait for another run's write (queued experiments share a cache)

# Statuses: ok; missing (404/410) and corrupt (bad bytes at the source) are permanent;
# failed is retried by the next run (connection errors, timeouts, 429, 5xx, other refusals).
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
        # A short busy timeout, retried in Python (see _write), so Ctrl-C is never stuck in
        # SQLite while another run holds the lock.
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=0.5)
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
        self._write("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?)", rows)

    def forget(self, url: str) -> None:
        """Drop a URL's record."""
        self._write("DELETE FROM results WHERE url=?", [(url,)])

    def _write(self, sql: str, rows: list[tuple]) -> None:
        """Run one write transaction, waiting for other runs' locks in short steps."""
        deadline = time.monotonic() + BUSY_WAIT
        with self.lock:
            while True:
                try:
                    self.db.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    continue
                try:
                    self.db.executemany(sql, rows)
                    self.db.execute("COMMIT")
                    return
                except BaseException:
                    self.db.execute("ROLLBACK")
                    raise

    def close(self) -> None:
        """Close the database."""
        self.db.close()
