"""Share one download cache between concurrent runs (queued experiments) without losses."""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from stages.core.files import atomic_write


class CacheUsers:
    """A shared lock held by each run while it uses the cache; packed objects are deleted only
    by a run that is the cache's sole user, so no run loses an object another run will read."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.pending = self.root / "released"
        self.pending.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.root / "users.lock", os.O_RDWR | os.O_CREAT, 0o644)
        # Blocks only while another run is deleting (it holds the lock exclusively).
        fcntl.flock(self.fd, fcntl.LOCK_SH)

    def release(self, paths: Iterable[Path]) -> int:
        """Delete these objects, and those other runs left, if no other run uses the cache
        now; else list them for the last run to delete. Return how many were deleted."""
        paths = sorted({str(p) for p in paths})
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Converting the lock may have dropped our shared one: take it back first.
            fcntl.flock(self.fd, fcntl.LOCK_SH)
            if paths:
                name = f"{os.getpid()}-{uuid.uuid4().hex}.txt"
                atomic_write(self.pending / name, "".join(f"{p}\n" for p in paths).encode())
            return 0
        try:
            lists = sorted(self.pending.glob("*.txt"))
            for listed in lists:
                paths.extend(listed.read_text().splitlines())
            deleted, objects = 0, str(self.root / "objects") + os.sep
            for path in set(paths):
                if not os.path.abspath(path).startswith(objects):
                    continue  # a list names only this cache's objects
                try:
                    os.unlink(path)
                    deleted += 1
                except FileNotFoundError:
                    pass
            for listed in lists:
                listed.unlink(missing_ok=True)
            return deleted
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_SH)

    def close(self) -> None:
        """Stop using the cache, first deleting what others listed if this run is its last user
        (two runs releasing at once each see the other, and both list)."""
        if self.fd < 0:
            return
        try:
            if any(self.pending.glob("*.txt")):
                self.release([])
        finally:
            os.close(self.fd)
            self.fd = -1
