"""Splits: each item's train/val/test split, assigned per group, never per item.

Near copies (a camera-trap location's or burst's images, one camera's clips, one media's
frames) share a group, so a split never puts one side of a near copy in train and the other
in test. A group's split depends on its own id only: the first 8 bytes of
sha256("<seed>\\0<source>\\0<group>") as a number in [0, 1) fall in one split's share of
`split.fractions`. Adding or removing other groups never moves a group; the fractions are
met as closely as the number of groups allows, and what was achieved is reported.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from stages.core.config import OnEmpty, SplitConf
from stages.core.errors import ConfigError, MetadataError

if TYPE_CHECKING:
    from stages.core.store import Row

log = logging.getLogger("stages.splits")

SHOWN = 8  # empty class/split pairs named in the logged line; the report lists them all


def draw(seed: int, source: str, group: str) -> float:
    """Return a group's seeded draw in [0, 1)."""
    digest = hashlib.sha256(f"{seed}\0{source}\0{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(cfg: SplitConf, source: str, group: str) -> str:
    """Return the split a group falls in."""
    u, edge = draw(cfg.seed, source, group), 0.0
    for name, fraction in zip(cfg.names, cfg.fractions, strict=True):
        edge += fraction
        if u < edge:
            return name
    # Fractions summing to 1 within rounding leave at most a sliver: the last non-empty split.
    return next(n for n, f in reversed(list(zip(cfg.names, cfg.fractions, strict=True))) if f)


def assign(cfg: SplitConf, source: str, groups: Iterable[str]) -> dict[str, str]:
    """Return each group's split."""
    return {g: split_of(cfg, source, g) for g in sorted(set(groups))}


def own_split(cfg: SplitConf, value: str, where: str) -> str:
    """Return a split a source's data names itself (e.g. a CSV's split column), checked."""
    if value not in cfg.names:
        raise MetadataError(
            f"{where}: split {value!r} is not one of split.names {cfg.names} (rename it in "
            "conf/split, or let groups be drawn)"
        )
    return value


def group_key(meta: dict, key: str, item: str, source: str) -> str:
    """Return an item's group id from its metadata; refuse an item without one."""
    value = meta.get(key)
    if value is None or str(value) == "":
        raise ConfigError(
            f"{source}: item {item!r} has no {key!r} to group it by for the splits (its "
            f"metadata holds {sorted(meta)})"
        )
    return str(value)


def report(
    cfg: SplitConf, items: list[tuple[str, list[str]]], groups: dict[str, str], classes: list[str]
) -> dict:
    """Return split metrics from (split, labels) per item and each group's split: counts,
    achieved fractions, per-class counts, and the classes a split lacks."""
    per_split = Counter(split for split, _ in items)
    per_class = {name: Counter() for name in cfg.names}
    for split, labels in items:
        per_class[split].update(labels)
    total = len(items) or 1
    empty = [
        {"class": c, "split": s}
        for c in classes
        for s in cfg.names
        if dict(zip(cfg.names, cfg.fractions, strict=True))[s] > 0 and not per_class[s][c]
    ]
    group_counts = Counter(groups.values())
    return {
        "items": {s: per_split.get(s, 0) for s in cfg.names},
        "groups": {s: group_counts.get(s, 0) for s in cfg.names},
        "fractions_wanted": dict(zip(cfg.names, cfg.fractions, strict=True)),
        "fractions_achieved": {s: round(per_split.get(s, 0) / total, 6) for s in cfg.names},
        "classes": {s: {c: per_class[s].get(c, 0) for c in classes} for s in cfg.names},
        "empty_classes": empty,
    }


def summary(empty: list[dict], source: str, limit: int | None = SHOWN) -> str:
    """Return one line naming a source's empty class/split pairs (the first `limit` of them)."""
    pairs = [f"{e['class']} ({e['split']})" for e in empty]
    if limit is not None and len(pairs) > limit:
        pairs = [*pairs[:limit], f"and {len(pairs) - limit} more"]
    verb = "pair has" if len(empty) == 1 else "pairs have"
    return f"{source}: {len(empty)} class/split {verb} no items: {', '.join(pairs)}"


def check(cfg: SplitConf, metrics: dict, source: str) -> list[str]:
    """Return warnings for classes a split lacks; raise when conf makes that an error."""
    empty = metrics["empty_classes"]
    if empty and cfg.on_empty_class is OnEmpty.error:
        raise MetadataError(f"{summary(empty, source, None)} (split.on_empty_class: error)")
    return [f"{source}: class {e['class']!r} has no items in split {e['split']!r}" for e in empty]


def set_splits(
    rows: list[Row], group_of: Callable[[Row], tuple[str, str | None]], source: str, cfg: SplitConf
) -> list[str]:
    """Set each row's split from its group (group_of: the group, and the split its data
    names, if any); return each row's group."""
    chosen: dict[str, str] = {}
    groups = []
    for row in rows:
        group, own = group_of(row)
        if own is not None:
            split = own_split(cfg, own, f"{source} item {row.item_id!r}")
        else:  # drawn once per group: a video's frames or a site's images share it
            split = chosen.get(group) or split_of(cfg, source, group)
        if chosen.setdefault(group, split) != split:
            raise MetadataError(
                f"{source}: group {group!r} names two splits ({chosen[group]!r} and "
                f"{split!r}, at item {row.item_id!r}): its near copies would leak"
            )
        row.split = split
        groups.append(group)
    return groups


def split_metrics(
    cfg: SplitConf, units: list[Row], groups: dict[str, str], classes: list[str], source: str
) -> dict:
    """Return the split metrics over `units` (the items, or one row per clip or movie) and
    each group's split, with warnings for classes a split lacks (logged)."""
    metrics = report(cfg, [(r.split, r.labels) for r in units], groups, classes)
    metrics["warnings"] = check(cfg, metrics, source)
    if metrics["empty_classes"]:  # one line per source: tiny data leaves many pairs empty
        log.warning("%s", summary(metrics["empty_classes"], source))
    return metrics


def assign_rows(
    rows: list[Row],
    units: list[Row],
    classes: list[str],
    group_of: Callable[[Row], tuple[str, str | None]],
    source: str,
    cfg: SplitConf,
) -> dict:
    """Set each row's split from its group; return the split metrics over `units`."""
    groups = set_splits(rows, group_of, source, cfg)
    by_group = {g: r.split for g, r in zip(groups, rows, strict=True)}
    return split_metrics(cfg, units, by_group, classes, source)
