"""fetch@kinetics planning: read the clip list, select clips per class, make the rows."""

from __future__ import annotations

import logging
from urllib.parse import quote

from stages.core.errors import ConfigError
from stages.core.selection import labels_of, match_names, pick
from stages.sources import Context, Plan
from stages.sources.kinetics.archives import archive_rows
from stages.sources.kinetics.clips import Clip, clip_row, parse_clips, read_text

log = logging.getLogger("stages.sources.kinetics")
ALL = "\0all"  # the one pool of a CSV without labels (test split)


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
