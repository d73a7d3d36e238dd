"""Pre-trimmed clips from the mirror's tar.gz archives: fetch, keep only the selected members.

An archive is downloaded through the shared downloader (size cap, retries, ledger), read as
a stream, and only members named like a selected clip (`<id>_<start:06d>_<end:06d>.mp4`) are
hashed into the object cache. Its member list is kept in the cache's listings, so a later run
skips an archive whose selected members are all in the cache. The archive itself is dropped
once read.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import logging
import re
import tarfile
import zlib
from pathlib import Path

from stages.core.errors import MetadataError
from stages.net.ledger import Result
from stages.sources import Context
from stages.sources.kinetics.clips import Clip, clip_row, read_text

log = logging.getLogger("stages.sources.kinetics")
MEMBER = re.compile(r"(?:.*/)?([A-Za-z0-9_-]{1,64}_\d{6}_\d{6})\.mp4")
# An archive of mp4s barely compresses: more than this many times its size unpacked is a bomb.
INFLATE_LIMIT = 4
MAX_MEMBERS = 1_000_000


class ArchiveError(Exception):
    """An archive that cannot be read as it should (its message is the stable reason)."""


# FileNotFoundError: a concurrent run (queued experiments) deleted the archive it fetched too;
# the item fails transiently and the next run fetches it again.
READ_ERRORS = (
    tarfile.TarError,
    zlib.error,
    EOFError,
    gzip.BadGzipFile,
    ArchiveError,
    FileNotFoundError,
)


class Capped(io.RawIOBase):
    """Read a stream, failing once more than `limit` bytes came out of it."""

    def __init__(self, raw, limit: int):
        self.raw, self.limit, self.count = raw, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self.raw.readinto(buf)
        self.count += n
        if self.count > self.limit:
            raise ArchiveError(f"unpacks to more than {self.limit} bytes")
        return n


def archive_urls(text: str) -> list[str]:
    """Return the archive URLs of a `k400_<split>_path.txt`-style list."""
    urls = [line.strip() for line in text.splitlines()]
    urls = [u for u in urls if u and not u.startswith("#")]
    bad = [u for u in urls if not u.startswith(("http://", "https://"))]
    if bad:
        raise MetadataError(f"archive list holds a non-http(s) line: {bad[0][:80]!r}")
    return urls


def listing_key(url: str) -> str:
    """Return the key an archive's member list is kept under in the cache's listings."""
    return f"kinetics-archive-members:{url}"


def known_members(ctx: Context, url: str) -> list[str] | None:
    """Return an archive's member names kept by an earlier run, if any."""
    names = ctx.listings.get(listing_key(url))
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return names


def _extract(
    ctx: Context, url: str, path: Path, wanted: set[str], max_bytes: int
) -> dict[str, Result]:
    """Stream an archive; store the wanted members; return results by clip id."""
    found: dict[str, Result] = {}
    names = []
    limit = INFLATE_LIMIT * path.stat().st_size
    with gzip.open(path, "rb") as gz, tarfile.open(fileobj=Capped(gz, limit), mode="r|") as tar:
        for member in tar:
            match = MEMBER.fullmatch(member.name)
            if not match:
                continue
            clip_id = match.group(1)
            names.append(clip_id)
            if len(names) > MAX_MEMBERS:
                raise ArchiveError(f"more than {MAX_MEMBERS} clip members")
            if clip_id not in wanted or clip_id in found:
                continue
            key = f"{url}#{clip_id}.mp4"
            if not member.isfile():
                found[clip_id] = Result(key, "corrupt", "archive member is not a regular file")
                continue
            if member.size > max_bytes:
                found[clip_id] = Result(key, "corrupt", f"member larger than {max_bytes} bytes")
                continue
            src = tar.extractfile(member)
            tmp = ctx.work_path()
            sha = hashlib.sha256()
            try:
                with open(tmp, "wb") as out:
                    for block in iter(functools.partial(src.read, 1 << 20), b""):
                        sha.update(block)
                        out.write(block)
                digest, size = ctx.adopt(tmp, sha.hexdigest())
            finally:
                tmp.unlink(missing_ok=True)
            found[clip_id] = Result(key, "ok", "", digest, size)
    ctx.listings.put(listing_key(url), sorted(names))
    return found


def archive_rows(cfg, chosen: list[Clip], labels: dict[str, list[str]], ctx: Context):
    """Return rows for the chosen clips, taken from the archives, and per-archive statistics."""
    f = cfg.fetch
    text, _ = read_text(f.archive_list, ctx, f.max_csv_bytes, "archive list")
    wanted = {c.clip_id for c in chosen}
    results: dict[str, Result] = {}
    stats = {"archives": 0, "fetched": 0, "skipped_complete": 0, "failed": 0, "reasons": {}}

    def failed(reason: str) -> None:
        stats["failed"] += 1
        stats["reasons"][reason] = stats["reasons"].get(reason, 0) + 1

    for url in archive_urls(text):
        stats["archives"] += 1
        known = known_members(ctx, url)
        if known is not None:
            keys = {c: f"{url}#{c}.mp4" for c in wanted.intersection(known)}
            standing = ctx.standing(keys.values())
            # Kept members, and permanent failures (too large, not a file), both stand.
            if len(standing) == len(keys):
                results.update((c, standing[key]) for c, key in keys.items())
                stats["skipped_complete"] += 1
                continue
        res = ctx.fetch(url, kind="any", refresh=True, max_bytes=f.max_archive_bytes)
        if res.status != "ok":
            failed(f"{res.status}: {res.reason}")
            continue
        stats["fetched"] += 1
        try:
            found = _extract(ctx, url, ctx.object_path(res.sha256), wanted, f.max_clip_bytes)
        except READ_ERRORS as exc:
            detail = exc if isinstance(exc, ArchiveError) else type(exc).__name__
            failed(f"unreadable archive: {detail}")
            continue
        finally:
            # Only its members are kept (archives are always fetched afresh: refresh=True).
            ctx.object_path(res.sha256).unlink(missing_ok=True)
        ctx.record(*found.values())
        results.update(found)
    rows = []
    for clip in chosen:
        res = results.get(clip.clip_id)
        row = clip_row(clip, labels.get(clip.clip_id, []), "", ctx.source_name, None)
        if res is None:
            # Absent everywhere is permanent; with an archive unread it may yet turn up.
            row.status = "failed" if stats["failed"] else "missing"
            row.reason = "an archive could not be read" if stats["failed"] else "in no archive"
        else:
            row.url, row.status, row.reason = res.url, res.status, res.reason
            row.sha256, row.bytes = res.sha256, res.bytes
        rows.append(row)
    return rows, stats
