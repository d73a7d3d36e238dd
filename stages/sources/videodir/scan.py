"""fetch@videodir: walk the folder, read each path's metadata, hash videos into the cache.

Nothing is pending after planning: every matched video is placed into the downloader's
object cache here (a hard link when the cache is on the same file system, else a copy; the
link or copy is what gets hashed), so fetch packs the rows straight into the store. A
hard-linked object is the input file itself: a tool that rewrites a video in place (rather
than writing a new file) would change the cached object too, so replace input videos, never
edit them in place.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path, PurePath

from stages.core.errors import ConfigError, MetadataError, StageError
from stages.core.parallel import default_workers, pmap, progress
from stages.core.store import Row
from stages.sources import Context, Plan
from stages.sources.videodir.conf import (
    EPOCH,
    OnUnmatched,
    VideodirConf,
    class_index,
    compile_regex,
    zone,
)

log = logging.getLogger("stages.sources.videodir")

LIST_CAP = 100  # paths listed in the report per kind (the counts are always complete)
HASH_WORKERS = 8  # hashing is disk-bound: a few threads keep the disk busy
EPOCH_TEXT = re.compile(r"\d{1,11}(?:\.\d{1,9})?")
EPOCH_START = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Found:
    """A video under the root: its path relative to the root, and the file to read."""

    rel: str
    real: str


@dataclass
class Walk:
    """What the walk saw."""

    videos: list[Found]
    other_files: int
    symlinks_skipped: list[str]


@dataclass
class Matched:
    """A video whose path matched the regex: its metadata."""

    found: Found
    camera: str
    timestamp: str
    groups: dict  # the regex's other named groups

    def meta(self) -> dict:
        """Return this path's metadata as kept in an item's `meta.files`."""
        return {
            **self.groups,
            "path": self.found.rel,
            "camera": self.camera,
            "timestamp": self.timestamp,
        }


def root_dir(root: str) -> Path:
    """Return the videos' folder: fetch.root, relative to the repository root (the working
    directory DVC runs stages in) unless absolute."""
    path = Path(root)
    if not path.is_dir():
        raise ConfigError(
            f"sources.videodir.fetch.root {root!r} is not a folder (looked at "
            f"{path.absolute()}): put the videos there or set fetch.root"
        )
    return path


def printable(rel: str) -> str:
    """Return a path as valid UTF-8 text (undecodable bytes of a file name escaped)."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def inside(path: str, root: str) -> bool:
    """Tell whether a resolved path lies under a resolved root."""
    return os.path.commonpath([path, root]) == root


def walk(root: Path, extensions: list[str]) -> Walk:
    """List the videos under the root, sorted by relative path; never leave the root.

    A symlinked file is read only when it resolves to a file inside the root; symlinked
    folders are never entered (no loops, no escapes).
    """
    real_root = os.path.realpath(root)
    exts = set(extensions)
    videos: list[Found] = []
    skipped: list[str] = []
    other = 0

    def fail(exc: OSError) -> None:
        # os.walk ignores unreadable folders by default: a silently partial import is worse.
        raise StageError(f"cannot read {exc.filename}: {exc.strerror}")

    for dirpath, dirnames, filenames in os.walk(real_root, onerror=fail):
        dirnames.sort()
        rel_dir = PurePath(os.path.relpath(dirpath, real_root))
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)):
                skipped.append((rel_dir / name).as_posix())  # os.walk does not enter it
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = (rel_dir / name).as_posix()
            if os.path.splitext(name)[1].lower() not in exts:
                other += 1
                continue
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                target = os.path.realpath(path)
                if not (inside(target, real_root) and os.path.isfile(target)):
                    skipped.append(rel)
                    continue
                path = target
            elif not stat.S_ISREG(mode):
                other += 1  # a fifo or device named like a video
                continue
            videos.append(Found(rel, path))
    videos.sort(key=lambda v: v.rel)
    return Walk(videos, other, sorted(skipped))


def parse_timestamp(text: str | None, fmt: str, tz: tzinfo) -> str:
    """Return a timestamp as UTC ISO-8601 (`2024-05-01T12:00:00Z`); raise ValueError.

    Naive times are in `tz`; an ambiguous local time (the hour repeated when clocks go back)
    is read as its first occurrence.
    """
    if not text:
        raise ValueError("empty timestamp")
    if fmt == EPOCH:
        if not EPOCH_TEXT.fullmatch(text):
            raise ValueError(f"not Unix seconds: {text!r}")
        whole, _, frac = text.partition(".")
        when = EPOCH_START + timedelta(seconds=int(whole), microseconds=int(f"{frac:0<6}"[:6]))
    else:
        when = datetime.strptime(text, fmt)
        if when.tzinfo is None:
            when = when.replace(tzinfo=tz)
    try:
        when = when.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp out of range") from None
    return when.replace(tzinfo=None).isoformat() + "Z"


def read_paths(videos: list[Found], cfg: VideodirConf) -> tuple[list[Matched], dict[str, str]]:
    """Match every path against the regex; return the matched ones and, by path, why the
    others did not match."""
    f = cfg.fetch
    pattern = compile_regex(f.regex, f.label_group, "sources.videodir.fetch")
    tz = zone(f.timezone)
    matched, unmatched = [], {}
    for video in videos:
        rel = video.rel
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            unmatched[printable(rel)] = "file name is not UTF-8"
            continue
        m = pattern.fullmatch(rel)
        if m is None:
            unmatched[rel] = "path does not match fetch.regex"
            continue
        groups = m.groupdict()
        camera, raw = groups.pop("camera"), groups.pop("timestamp")
        if not camera:
            unmatched[rel] = "empty camera"
            continue
        try:
            timestamp = parse_timestamp(raw, f.timestamp_format, tz)
        except (ValueError, OverflowError):
            unmatched[rel] = "timestamp does not parse with fetch.timestamp_format"
            continue
        matched.append(Matched(video, camera, timestamp, groups))
    return matched, unmatched


def labels_of(match: Matched, cfg: VideodirConf, names: dict[str, str]) -> tuple[list, str]:
    """Return a path's labels and, when it has none, why (`unlabeled` or the unknown value)."""
    f = cfg.fetch
    if f.label_group is None:
        return [f.default_label], ""
    value = match.groups.get(f.label_group)
    if not value:
        return ([f.default_label], "") if f.default_label else ([], "unlabeled")
    known = names.get(value.strip().lower())
    return ([known], "") if known else ([], value)


def capped(paths: list[str]) -> list[str]:
    """Return at most LIST_CAP paths, sorted."""
    return sorted(paths)[:LIST_CAP]


def plan(cfg: VideodirConf, ctx: Context) -> Plan:
    """Scan the folder; place every matched video in the object cache; return ok rows."""
    f = cfg.fetch
    root = root_dir(f.root)
    found = walk(root, f.extensions)
    matched, unmatched = read_paths(found.videos, cfg)
    if unmatched and f.on_unmatched is OnUnmatched.fail:
        shown = "; ".join(f"{p} ({why})" for p, why in sorted(unmatched.items())[:10])
        more = f" and {len(unmatched) - 10} more" if len(unmatched) > 10 else ""
        raise MetadataError(
            f"{len(unmatched)} video(s) under {f.root} cannot be read by fetch.regex "
            f"(fetch.on_unmatched: fail): {shown}{more}"
        )
    if found.symlinks_skipped:
        log.warning(
            "videodir: skipped %d symlink(s) leading out of %s or to folders "
            "(see reports/fetch.json)",
            len(found.symlinks_skipped),
            f.root,
        )
    if unmatched:
        log.warning("videodir: skipped %d video(s) fetch.regex cannot read", len(unmatched))

    excluded: Counter = Counter()
    kept = []
    for match in matched:
        camera_cfg = f.cameras.get(match.camera)
        include = camera_cfg.include if camera_cfg is not None else f.include_cameras_by_default
        if include:
            kept.append(match)
        else:
            excluded[match.camera] += 1

    def digest(match: Matched) -> tuple[str, int]:
        return ctx.import_file(match.found.real)

    workers = min(HASH_WORKERS, default_workers())
    groups: dict[str, list[Matched]] = {}
    sizes: dict[str, int] = {}
    results = pmap(digest, kept, kind="thread", workers=workers, window=4 * workers)
    bar = progress(total=len(kept), desc=f"fetch@{ctx.source_name}", unit="file", leave=False)
    for match, (sha, size) in zip(kept, results, strict=True):
        groups.setdefault(sha, []).append(match)  # kept is sorted: each group is too
        sizes[sha] = size
        bar.update()
    bar.close()

    names = class_index(cfg.classes)
    rows = []
    per_camera: Counter = Counter()
    unknown: Counter = Counter()
    unlabeled = conflicts = 0
    for sha, same in groups.items():
        first = same[0]
        labels, why = labels_of(first, cfg, names)
        if why == "unlabeled":
            unlabeled += 1
        elif why:
            unknown[why] += 1
        if any(labels_of(m, cfg, names)[0] != labels for m in same[1:]):
            conflicts += 1  # the first path's label stands, like its camera and time
        per_camera[first.camera] += 1
        rel = first.found.rel
        meta = {
            **first.groups,
            "camera": first.camera,
            "timestamp": first.timestamp,
            "paths": [m.found.rel for m in same],
            "files": [m.meta() for m in same],
            "ext": os.path.splitext(rel)[1].lower(),
        }
        rows.append(
            Row(
                item_id=f"sha256-{sha}",
                source=ctx.source_name,
                source_id=rel,
                url=f"file:{rel}",
                sha256=sha,
                bytes=sizes[sha],
                labels=labels,
                status="ok",
                meta=meta,
            )
        )
    seen = {m.camera for m in matched}
    stats = {
        "root": f.root,
        "files_seen": len(found.videos),
        "other_files": found.other_files,
        "symlinks_skipped": len(found.symlinks_skipped),
        "symlinks_skipped_paths": capped([printable(p) for p in found.symlinks_skipped]),
        "matched": len(matched),
        "unmatched": len(unmatched),
        "unmatched_paths": capped(list(unmatched)),
        "unmatched_reasons": dict(sorted(Counter(unmatched.values()).items())),
        "excluded_by_camera": dict(sorted(excluded.items())),
        "duplicates": len(kept) - len(groups),
        "items": len(rows),
        "items_per_camera": dict(sorted(per_camera.items())),
        "labels_unknown": dict(sorted(unknown.items())),
        "unlabeled": unlabeled,
        "label_conflicts": conflicts,
        # A camera configured but never seen is most likely a typo in fetch.cameras.
        "cameras_not_seen": sorted(set(f.cameras) - seen),
    }
    log.info(
        "videodir: %d video(s), %d matched, %d item(s) (%d duplicate path(s) merged)",
        len(found.videos),
        len(matched),
        len(rows),
        stats["duplicates"],
    )
    return Plan(rows=rows, stats=stats)
