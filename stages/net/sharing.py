"""Share one download cache between concurrent runs (queued experiments) without losses."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path

from stages.core.files import atomic_write

log = logging.getLogger("stages.net.sharing")
DIGEST = re.compile(r"[0-9a-f]{64}")


def object_path(root: Path, sha256: str) -> Path:
    """Return where the object with this sha256 lives in a download cache."""
    return root / "objects" / sha256[:2] / sha256


class CacheUsers:
    """A shared lock held by each run while it uses the cache; packed objects are deleted only
    by a run that is the cache's sole user, so no run loses an object another run will read.

    The lock is flock(2): on NFS it is emulated with POSIX locks, and on mounts without working
    locks (nolock, some FUSE or CIFS mounts) runs sharing a cache must keep their objects
    (`fetch.keep_cache: true`).
    """

    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self.pending = self.root / "released"
        self.pending.mkdir(parents=True, exist_ok=True)
        # 0666 less the umask: users of a shared cache can all take the lock.
        self.fd = os.open(self.root / "users.lock", os.O_RDWR | os.O_CREAT, 0o666)
        # Blocks only while another run is deleting (it holds the lock exclusively).
        fcntl.flock(self.fd, fcntl.LOCK_SH)
        self.keep: set[str] = set()  # objects this run still needs (it did not release them)

    def release(self, digests: Iterable[str]) -> int:
        """Delete these objects, and those other runs left, if no other run uses the cache
        now; else list them for the last run to delete. Return how many were deleted."""
        names = sorted({d for d in digests if DIGEST.fullmatch(d)})
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Converting the lock may have dropped our shared one: take it back first.
            fcntl.flock(self.fd, fcntl.LOCK_SH)
            if names:
                name = f"{os.getpid()}-{uuid.uuid4().hex}.txt"
                atomic_write(self.pending / name, "".join(f"{d}\n" for d in names).encode())
            return 0
        try:
            return self._sweep(names)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_SH)

    def _sweep(self, names: list[str]) -> int:
        """Delete the named objects and every listed one (the caller holds the lock alone)."""
        lists = sorted(self.pending.glob("*.txt"))
        wanted = set(names)
        for listed in lists:
            try:
                wanted.update(d for d in listed.read_text().split() if DIGEST.fullmatch(d))
            except OSError as exc:
                log.warning("cannot read %s: %s", listed, exc.strerror)
        deleted = 0
        for digest in sorted(wanted - self.keep):
            try:
                object_path(self.root, digest).unlink()
                deleted += 1
            except FileNotFoundError:
                pass
            except OSError as exc:  # one object we cannot delete never fails a finished build
                log.warning("cannot delete cached object %s: %s", digest, exc.strerror)
        for listed in lists:
            listed.unlink(missing_ok=True)
        return deleted

    def close(self) -> None:
        """Stop using the cache, first deleting what others listed if this run is its last
        user (never the objects this run keeps)."""
        if self.fd < 0:
            return
        try:
            if any(self.pending.glob("*.txt")):
                # Unlocked first: of two runs closing at once, one then gets the lock alone.
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return  # another run is still using the cache: it sweeps when it closes
                self._sweep([])
        finally:
            os.close(self.fd)
            self.fd = -1
