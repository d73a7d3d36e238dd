"""The object cache: content-addressed objects, scratch paths, and part files of killed runs."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import socket
from pathlib import Path

from stages.core.errors import StageError
from stages.core.files import sha256_file

SPILL = 8 << 20  # bodies up to this size stay in memory until verified

HOST = socket.gethostname().replace("-", "_") or "host"
_PART_SEQ = itertools.count()  # shared by every cache of the process: names never clash


def part_name(tmp: str) -> str:
    """Return a fresh part-file path: <pid>-<seq>-<host>.part."""
    return f"{tmp}{os.getpid()}-{next(_PART_SEQ)}-{HOST}.part"


def process_alive(pid: int) -> bool:
    """Tell whether a process runs (a killed one not yet reaped, a zombie, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def remove_orphan_parts(tmp: Path) -> None:
    """Delete part files left by killed runs on this host (live processes keep theirs)."""
    for part in tmp.glob("*.part"):
        pid, _, rest = part.name.partition("-")
        host = rest.partition("-")[2].removesuffix(".part")
        if not pid.isdigit() or host != HOST:
            continue  # another machine (or container) sharing the cache: not ours to judge
        if not process_alive(int(pid)):
            if part.is_dir():  # a work directory (yt-dlp sections)
                shutil.rmtree(part, ignore_errors=True)
            else:
                part.unlink(missing_ok=True)


class ObjectCache:
    """Objects named by their sha256 under `<root>/objects`, scratch files under `<root>/tmp`."""

    def __init__(self, root: Path):
        # Absolute: Dask workers write into the same cache, at the same path.
        self.root = Path(root).absolute()
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        for i in range(256):  # made once, not per file
            (self.objects / f"{i:02x}").mkdir(exist_ok=True)
        remove_orphan_parts(self.tmp)
        self.objects_str, self.tmp_str = f"{self.objects}/", f"{self.tmp}/"

    def object_file(self, sha256: str) -> str:
        """Return where content with this hash lives in the cache (a plain string: hot path)."""
        return f"{self.objects_str}{sha256[:2]}/{sha256}"

    def object_path(self, sha256: str) -> Path:
        """Return where content with this hash lives in the cache."""
        return Path(self.object_file(sha256))

    def part_file(self) -> str:
        """Return a fresh part-file path for a body being received (a plain string: hot path)."""
        return part_name(self.tmp_str)

    def work_path(self) -> Path:
        """Return a fresh scratch path in the cache's tmp dir (removed if its run is killed)."""
        return Path(part_name(self.tmp_str))

    def adopt(self, path: Path, sha256: str | None = None) -> tuple[str, int]:
        """Move a finished local file into the object cache; return (sha256, size).

        For items that arrive by other means than the downloader (yt-dlp sections, archive
        members, local files): the file is hashed unless its hash is given, then renamed
        into place atomically, so an object's name always matches its bytes.
        """
        size = os.path.getsize(path)
        sha256 = sha256 or sha256_file(path)
        os.replace(path, self.object_file(sha256))
        return sha256, size

    def import_file(self, src: str | Path) -> tuple[str, int]:
        """Put a local file into the object cache under its hash; return (sha256, size).

        The file is linked (or, across file systems, copied) first and the link is hashed: the
        bytes hashed are the bytes kept, even if the input is replaced meanwhile.
        """
        tmp = self.work_path()
        try:
            try:
                os.link(src, tmp)  # no copy when the cache shares the file system
            except OSError:
                shutil.copyfile(src, tmp)
            return self.adopt(tmp)  # an object already there is replaced by equal bytes
        except OSError as exc:
            raise StageError(f"cannot import {src} into the cache: {exc.strerror}") from None
        finally:
            tmp.unlink(missing_ok=True)


class PartFile:
    """A body being received: kept in memory, spilled to a .part file when it grows large."""

    __slots__ = ("path", "chunks", "size", "fh", "sha", "md5", "head", "tail")

    def __init__(self, path: str):
        self.path: str | None = path
        self.chunks: list[bytes] = []
        self.size = 0
        self.fh = None
        self.sha = self.md5 = None
        self.head = self.tail = b""

    def write(self, data: bytes) -> None:
        """Take the next chunk of the body."""
        if self.fh is None:
            self.chunks.append(data)
            self.size += len(data)
            if self.size > SPILL:
                self._spill()
            return
        if self.size < 16:
            self.head = (self.head + data[:16])[:16]
        self.tail = (self.tail + data[-64:])[-64:]
        self.fh.write(data)
        self.sha.update(data)
        self.md5.update(data)
        self.size += len(data)

    def _spill(self) -> None:
        data = b"".join(self.chunks)
        self.chunks = []
        self.fh = open(self.path, "wb")
        self.sha, self.md5 = hashlib.sha256(data), hashlib.md5(data)
        self.head, self.tail = data[:16], data[-64:]
        self.fh.write(data)

    def discard(self) -> None:
        """Drop the body and any part file (none once it was moved into the cache)."""
        self.chunks = []
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.path = None
