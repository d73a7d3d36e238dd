"""File helpers: every output appears whole under its final name, or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def part_path(path: Path) -> Path:
    """Return the temporary name an output is written under before it is complete."""
    return path.with_name(path.name + ".part")


def unique_part_path(path: Path) -> Path:
    """Return a temporary name of this writer's own: a task Dask runs twice at once (after a
    worker was lost) never writes into the other's file."""
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.part")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to `path` on success, delete it on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_part_path(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write bytes or UTF-8 text to a file atomically."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)


def file_digest(path: str | Path, algorithm: str) -> str:
    """Return a file's digest (hex) by a hashlib algorithm name, read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Return a file's SHA-256 (hex), read in chunks."""
    return file_digest(path, "sha256")


def spool(path: str | Path, blobs: list[bytes]) -> list[int]:
    """Write a task's payloads one after another into a file (temp + rename: a task that
    runs twice changes nothing); return their sizes."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for blob in blobs:
            fh.write(blob)
    return [len(b) for b in blobs]


def unspool(path: str | Path, sizes: list[int]) -> list[bytes]:
    """Read back a spool's payloads and delete it."""
    with open(path, "rb") as fh:
        blobs = [fh.read(n) for n in sizes]
    Path(path).unlink()
    return blobs


def cache_root() -> Path:
    """Return the download cache directory ($DSREPO_CACHE_DIR, else ~/.cache/dsrepo)."""
    env = os.environ.get("DSREPO_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dsrepo"
