"""Kinetics clip lists: read one, parse its CSV (columns by name) into Clips, make their rows."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

from stages.core.errors import CorruptMetadata, MetadataError
from stages.core.store import Row
from stages.sources import Context

REQUIRED = ("youtube_id", "time_start", "time_end")
VIDEO_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Clip:
    """One row of the clip list."""

    youtube_id: str
    start: float
    end: float
    label: str | None = None
    split: str | None = None
    is_cc: str | None = None

    @property
    def clip_id(self) -> str:
        """Return the mirror's clip name: `<id>_<start:06d>_<end:06d>`."""
        return f"{self.youtube_id}_{int(self.start):06d}_{int(self.end):06d}"


def _time(value: str, line: int, column: str) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        msg = f"annotation CSV line {line}: {column} {value!r} is not a number"
        raise CorruptMetadata(msg) from None
    if not math.isfinite(t) or t < 0:
        raise CorruptMetadata(f"annotation CSV line {line}: {column} {value!r} is out of range")
    return t


def parse_clips(text: str) -> tuple[list[Clip], bool, int]:
    """Parse the CSV; return (clips in file order, whether it has labels, duplicates dropped)."""
    reader = csv.DictReader(io.StringIO(text), restkey="\0extra")
    header = [(h or "").strip() for h in reader.fieldnames or []]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise CorruptMetadata(
            f"annotation CSV lacks column(s) {', '.join(missing)} (header: {','.join(header)})"
        )
    reader.fieldnames = header
    has_label = "label" in header
    clips, seen, dups = [], set(), 0
    try:
        for rec in reader:
            line = reader.line_num
            if "\0extra" in rec:
                raise CorruptMetadata(f"annotation CSV line {line} has more fields than the header")
            if any(rec.get(c) is None for c in REQUIRED):
                raise CorruptMetadata(
                    f"annotation CSV line {line} has fewer fields than the header"
                )
            vid = rec["youtube_id"].strip()
            if not VIDEO_ID.fullmatch(vid):
                raise CorruptMetadata(f"annotation CSV line {line}: bad youtube_id {vid!r}")
            start = _time(rec["time_start"], line, "time_start")
            end = _time(rec["time_end"], line, "time_end")
            if end <= start:
                raise CorruptMetadata(f"annotation CSV line {line}: time_end <= time_start")
            label = (rec.get("label") or "").strip() or None if has_label else None
            clip = Clip(
                vid,
                start,
                end,
                label,
                (rec.get("split") or "").strip() or None,
                (rec.get("is_cc") or "").strip() or None,
            )
            if clip.clip_id in seen:
                dups += 1
                continue
            seen.add(clip.clip_id)
            clips.append(clip)
    except csv.Error as exc:
        raise CorruptMetadata(f"annotation CSV line {reader.line_num}: {exc}") from None
    return clips, has_label, dups


def read_text(location: str, ctx: Context, max_bytes: int, what: str) -> tuple[str, str]:
    """Return (text, sha256) of a local file or a URL fetched through the shared downloader."""
    if location.startswith(("http://", "https://")):
        res = ctx.fetch(location, kind="any", refresh=True, max_bytes=max_bytes)
        if res.status != "ok":
            raise MetadataError(f"cannot download the {what}: {res.status} ({res.reason})")
        data, digest = ctx.object_path(res.sha256).read_bytes(), res.sha256
    else:
        path = Path(location)
        if not path.is_file():
            raise MetadataError(f"{what} {location} not found")
        if path.stat().st_size > max_bytes:
            raise MetadataError(f"{what} {location} is larger than {max_bytes} bytes")
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
    try:
        return data.decode("utf-8-sig"), digest
    except UnicodeDecodeError as exc:
        raise MetadataError(f"{what} is not UTF-8: {exc.reason}") from None


def clip_row(clip: Clip, labels: list[str], url: str, source: str, window) -> Row:
    """Return the row for one clip."""
    return Row(
        item_id=clip.clip_id,
        source=source,
        source_id=clip.youtube_id,
        url=url,
        labels=labels,
        status="pending",
        meta={
            "youtube_id": clip.youtube_id,
            "time_start": clip.start,
            "time_end": clip.end,
            "split": clip.split,
            "window": window,
            "ext": ".mp4",
        },
    )
