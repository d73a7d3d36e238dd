"""Selection shared by every source: class names, seeded ranking, per-class caps, byte budget."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from stages.core.errors import ConfigError


def match_names(
    index: Mapping[str, set], wanted: Iterable[str], what: str = "class"
) -> dict[str, set]:
    """Map each wanted name (case-insensitive) to the ids the index gives it, or raise.

    `index` maps lower-case names to ids; unknown names fail together, with close matches.
    """
    out, unknown = {}, []
    for name in wanted:
        ids = index.get(name.strip().lower())
        if ids:
            out[name] = ids
        else:
            unknown.append(name)
    if unknown:
        lines = []
        for name in unknown:
            close = difflib.get_close_matches(name.lower(), list(index), n=4, cutoff=0.5)
            lines.append(f"{name!r}" + (f" (close: {', '.join(close)})" if close else ""))
        raise ConfigError(f"unknown {what} name(s): {'; '.join(lines)}")
    return out


def ranker(seed: int) -> Callable[[str], bytes]:
    """Return a sort key ranking ids by a seeded hash (stable as data is added upstream)."""
    blake, key = hashlib.blake2b, int(seed).to_bytes(8, "big", signed=True)

    def rank(item_id: str) -> bytes:
        raw = item_id.encode()
        return blake(raw, digest_size=8, key=key).digest() + raw  # the id breaks ties

    return rank


def check_caps(caps: Mapping[str, int], names: Iterable[str]) -> dict[str, int]:
    """Return caps by lower-case class name; refuse caps for classes that are not selected."""
    lowered = {str(k).lower(): int(v) for k, v in caps.items()}
    unknown = set(lowered) - {n.lower() for n in names}
    if unknown:
        raise ConfigError(f"caps name classes not in `classes`: {', '.join(sorted(unknown))}")
    return lowered


@dataclass
class Picked:
    """Ids chosen per class and the statistics of how they were chosen."""

    chosen: set[str]
    stats: dict = field(default_factory=dict)


def pick(
    per_class: Mapping[str, set[str]],
    names: list[str],
    *,
    seed: int,
    cap: int | None,
    caps: Mapping[str, int],
    byte_budget: int | None,
    est_bytes: int,
) -> Picked:
    """Choose ids per class: seeded-hash ranking, per-class caps, then a byte budget.

    An id in several classes counts once. The budget is spent round-robin by rank, so every
    class gets its fair prefix rather than the first classes taking it all.
    """
    rank = ranker(seed)
    caps = check_caps(caps, names)
    ranked: dict[str, list[str] | set[str]] = {}
    stats = {"available": {}, "capped": {}}
    for name in names:
        limit = caps.get(name.lower(), cap)
        pool = per_class[name]
        stats["available"][name] = len(pool)
        if byte_budget is None and (limit is None or int(limit) >= len(pool)):
            ids = pool  # everything is taken: no ranking needed
        else:
            # A full sort beats heapq.nsmallest here: caps are often a large share of the pool.
            ids = sorted(pool, key=rank)[: None if limit is None else int(limit)]
        stats["capped"][name] = len(pool) - len(ids)
        ranked[name] = ids
    chosen: set[str] = set()
    dropped: set[str] = set()  # an id in two classes is dropped once, not twice
    total, stopped = 0, False
    if byte_budget is None:
        for ids in ranked.values():
            chosen.update(ids)
        total = est_bytes * len(chosen)
    else:
        depth = max((len(v) for v in ranked.values()), default=0)
        for pos in range(depth):
            for name in names:
                ids = ranked[name]
                if pos >= len(ids):
                    continue
                item = ids[pos]
                if item in chosen:
                    continue
                if stopped or total + est_bytes > int(byte_budget):
                    stopped = True
                    dropped.add(item)
                    continue
                chosen.add(item)
                total += est_bytes
    # What a cap bounds: the items picked for a class by its rank. An item picked for another
    # class may carry this class's label too, so `labels_of` can count more than the cap.
    stats["picked"] = {
        name: len(ids) if byte_budget is None else sum(1 for i in ids if i in chosen)
        for name, ids in ranked.items()
    }
    stats["budget_dropped"] = len(dropped)
    stats["estimated_bytes"] = total
    stats["budget_exhausted"] = stopped
    return Picked(chosen, stats)


def labels_of(
    per_class: Mapping[str, set[str]], names: list[str], chosen: set[str]
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Return each chosen id's class names (in `names` order) and the count per class."""
    labels: dict[str, list[str]] = {}
    counts = {}
    for name in names:  # config order, so labels come out sorted by class id
        pool = per_class[name]
        hits = pool & chosen if len(chosen) < len(pool) else [i for i in pool if i in chosen]
        for item in hits:
            labels.setdefault(item, []).append(name)
        counts[name] = len(hits)
    return labels, counts


def even_indices(total: int, n: int) -> list[int]:
    """Return n evenly spaced positions in range(total) (centres of n equal segments)."""
    if total <= 0:
        return []
    if n >= total:
        return list(range(total))
    return [int((2 * k + 1) * total / (2 * n)) for k in range(n)]
