"""Metrics JSON and per-class plot data, written for `dvc metrics` and `dvc plots`."""

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
