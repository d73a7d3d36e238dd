"""fetch@kinetics planning: read the clip list, select clips per class, make the rows."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from urllib.parse import quote

from stages.core.errors import ConfigError, MetadataError
from stages.core.selection import labels_of, match_names, pick
from stages.core.store import Row
from stages.sources import Context, Plan
from stages.sources.kinetics.clips import Clip, parse_clips

log = logging.getLogger("stages.sources.kinetics")
ALL = "\0all"  # the one pool of a CSV without labels (test split)


def read_text(location: str, ctx: Context, max_bytes: int, what: str) -> tuple[str, str]:
    """Return (text, sha256) of a local file or a URL fetched through the shared downloader."""
    if location.startswith(("http://", "https://")):
        dl = ctx.downloader
        res = dl.fetch(location, kind="any", refresh=True, max_bytes=max_bytes)
        if res.status != "ok":
            raise MetadataError(f"cannot download the {what}: {res.status} ({res.reason})")
        data, digest = dl.object_path(res.sha256).read_bytes(), res.sha256
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


def select(
    cfg, clips: list[Clip], has_label: bool
) -> tuple[list[Clip], dict[str, list[str]], dict]:
    """Return the chosen clips, their labels by clip id, and selection statistics."""
    f = cfg.fetch
    if f.split is not None:
        splits = {c.split for c in clips}
        if splits == {None}:
            raise ConfigError("the annotation CSV has no split column: set fetch.split: null")
        clips = [c for c in clips if c.split == f.split]
        if not clips:
            raise ConfigError(f"no clips in split {f.split!r} (splits: {sorted(splits - {None})})")
    by_id = {c.clip_id: c for c in clips}
    if has_label:
        index: dict[str, set] = {}
        for c in clips:
            if c.label:
                index.setdefault(c.label.lower(), set()).add(c.clip_id)
        per_class = match_names(index, cfg.classes, "class")
        names, caps = list(cfg.classes), f.caps
    else:  # a test-split list: no labels, one pool, the default cap
        per_class, names, caps = {ALL: set(by_id)}, [ALL], {}
    picked = pick(
        per_class, names, seed=f.seed, cap=f.cap, caps=caps, byte_budget=None, est_bytes=0
    )
    labels, counts = labels_of(per_class, names, picked.chosen)
    if not has_label:
        labels, counts = {}, {"(unlabelled)": len(picked.chosen)}
    chosen = [by_id[i] for i in sorted(picked.chosen)]
    stats = {k: v for k, v in picked.stats.items() if k in ("available", "capped", "picked")}
    stats["selected"] = counts
    return chosen, labels, stats


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


def plan(cfg, ctx: Context) -> Plan:
    """Read the clip list, select clips, and return their rows."""
    f = cfg.fetch
    text, digest = read_text(f.annotations, ctx, f.max_csv_bytes, "annotation CSV")
    clips, has_label, dups = parse_clips(text)
    chosen, labels, stats = select(cfg, clips, has_label)
    stats = {
        "annotations_sha256": digest,
        "csv_clips": len(clips),
        "csv_duplicates": dups,
        "labelled": has_label,
        **stats,
    }
    if f.mode.value == "archives":
        from stages.sources.kinetics.archives import archive_rows

        rows, archive_stats = archive_rows(cfg, chosen, labels, ctx)
        stats["archives"] = archive_stats
    else:
        rows = []
        for clip in chosen:
            # The fragment keeps a video's clips apart in the ledger (RFC 7111-style #t=).
            url = f.url_template.format(id=quote(clip.youtube_id, safe=""))
            url += f"#t={clip.start:g},{clip.end:g}"
            window = [0.0, round(clip.end - clip.start, 6)]
            rows.append(clip_row(clip, labels.get(clip.clip_id, []), url, ctx.source_name, window))
    log.info("selected %d of %d clips (%s)", len(rows), len(clips), stats["selected"])
    return Plan(rows, stats)
