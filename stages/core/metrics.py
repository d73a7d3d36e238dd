"""Metrics JSON and per-class plot data, written for `dvc metrics` and `dvc plots`.

A stage's metrics file holds its headline numbers only (`headline`), so `dvc exp show` and
`dvc metrics diff` stay readable: items per split, failures by kind, gate counts, and per
class only for a source of at most MAX_CLASSES classes. Everything a stage counted goes to its
report (`data/<source>/reports/<stage>.json`, git-tracked, not a DVC metric). Headline names
sit under the source's name (`lila.train`, `lila.cougar`), so each is unique across the
project's metrics files and DVC shows it bare instead of prefixing the file's path; they are
short because `dvc exp show` gives every changed one a column. A class named like another
headline number is written `class.<name>`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from stages.core.files import atomic_write
from stages.core.store import Row


def write_json(path: str | Path, data) -> None:
    """Write JSON atomically with sorted keys, so diffs are stable."""
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def class_counts(rows: Iterable[Row], names: list[str], status: str = "ok") -> dict[str, int]:
    """Count items per class among rows with a status (an item counts once per label)."""
    counts = Counter()
    for row in rows:
        if row.status == status:
            counts.update(set(row.labels))
    return {n: counts.get(n, 0) for n in names}


def status_summary(rows: Iterable[Row]) -> dict:
    """Summarise rows: items by status, failures by reason, bytes."""
    rows = list(rows)
    by_status = Counter(r.status for r in rows)
    reasons = Counter(f"{r.status}: {r.reason}" for r in rows if r.status != "ok")
    return {
        "items": len(rows),
        "ok": by_status.get("ok", 0),
        "failed": by_status.get("failed", 0),
        "missing": by_status.get("missing", 0),
        "corrupt": by_status.get("corrupt", 0),
        "reasons": dict(sorted(reasons.items())),
        "bytes": sum(r.bytes or 0 for r in rows if r.status == "ok"),
    }


def write_plot(path: str | Path, counts: dict[str, int]) -> None:
    """Write per-class counts as [{cls, n}] for a bar_horizontal plot."""
    write_json(path, [{"cls": k, "n": v} for k, v in counts.items()])


MAX_CLASSES = 10  # a source with more classes keeps its per-class counts in reports and plots


def headline(family: str, source: str, full: dict, classes: list[str]) -> dict:
    """Return a stage's headline metrics from everything it counted, under the source's name."""
    pick = HEADLINES[family](full)
    if family == "clean" and len(classes) <= MAX_CLASSES:
        counts = full.get("classes") or {}
        taken = RESERVED | set((full.get("splits") or {}).get("items") or {})
        for name in classes:
            pick[f"class.{name}" if name in taken else name] = counts.get(name, 0)
    return {source: pick}


def _fetch(m: dict) -> dict:
    """Items fetched, and the ones that were not by kind."""
    return {
        "fetched": m["ok"],
        "failed": m["failed"],
        "missing": m["missing"],
        "corrupt": m["corrupt"],
    }


def _frames(m: dict) -> dict:
    """Clips decoded, clips that failed, frames kept."""
    return {"clips": m["clips_ok"], "clips_failed": m["clips_failed"], "frames": m["frames"]}


def _clean(m: dict) -> dict:
    """Items (clips, for video) per split (by the split's name), items dropped, and the gates'
    pair counts."""
    out = {
        **((m.get("splits") or {}).get("items") or {}),
        "dropped": m.get("dropped_total", sum((m.get("dropped") or {}).values())),
    }
    totals = (m.get("gates") or {}).get("totals")
    if totals:
        out.update(
            dupes=totals["duplicate"],
            conflicts=totals["label_conflict"],
            leaks=totals["cross_split"],
        )
    return out


def _export(m: dict) -> dict:
    """Items exported."""
    return {"exported": m["items"]}


def _import(m: dict) -> dict:
    """Files on the target, files that failed, and whether the job is complete."""
    return {
        "imported": m["files"] - m["failed"],
        "import_failed": m["failed"],
        "job_complete": m["job_complete"],
    }


def _labels(m: dict) -> dict:
    """Labels read back and the files that carry them."""
    return {"labels": m["labels"], "files_labelled": m["files_labelled"]}


HEADLINES = {
    "fetch": _fetch,
    "frames": _frames,
    "clean": _clean,
    "export": _export,
    "import": _import,
    "labels": _labels,
}

# Headline names a class count must not take (split names come first: they are the user's).
RESERVED = {
    "fetched", "failed", "missing", "corrupt", "clips", "clips_failed", "frames", "dropped",
    "dupes", "conflicts", "leaks", "exported", "imported", "import_failed", "job_complete",
    "labels", "files_labelled", "class",
}  # fmt: skip
