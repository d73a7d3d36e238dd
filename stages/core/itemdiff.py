"""Item-level differences between two versions of a stage's manifest.

An item is matched by its id. Added and removed items count once; an item in both versions
counts once per kind of change: relabelled (its label set), boxes (its boxes, rounded to
1/1000 of a pixel or unit), content (when both versions hold its payload: its sha256 when
both know it, else its size in bytes and pixels), split and status (e.g. ok -> missing
upstream). Per class counts use the item's labels in the newer version, else the older one;
an item without labels counts under "(none)".
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from stages.core.store import Row

KINDS = ("added", "removed", "relabelled", "boxes", "content", "split", "status")
NO_CLASS = "(none)"
FIELDS = {  # kind -> the row fields shown for both versions
    "relabelled": ("labels",),
    "boxes": ("boxes",),
    "content": ("sha256", "bytes", "width", "height"),
    "split": ("split",),
    "status": ("status", "reason"),
}


def coordinate(value) -> float | str:
    """Return a box coordinate rounded to 1/1000, or its text when it is not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return round(number, 3) if math.isfinite(number) else str(number)


def box_key(boxes: list[dict]) -> list[tuple]:
    """Return boxes comparable across versions: sorted, coordinates rounded."""
    return sorted(
        (str(b.get("label")), *(str(coordinate(b.get(k, 0.0))) for k in ("x", "y", "w", "h")))
        for b in boxes
    )


def changes(a: Row, b: Row) -> list[str]:
    """Return how one item changed between two versions."""
    out = []
    if sorted(a.labels) != sorted(b.labels):
        out.append("relabelled")
    if box_key(a.boxes) != box_key(b.boxes):
        out.append("boxes")
    if a.status != "ok" or b.status != "ok":
        pass  # no payload on one side: its status change says it all
    elif a.sha256 and b.sha256:
        if a.sha256 != b.sha256:
            out.append("content")
    elif (a.bytes, a.width, a.height) != (b.bytes, b.width, b.height):
        out.append("content")  # no digest on one side (e.g. decoded frames): size and shape
    if a.split != b.split:
        out.append("split")
    if a.status != b.status:
        out.append("status")
    return out


@dataclass
class Change:
    """One changed item: its kinds of change and both versions (None where absent)."""

    item_id: str
    source_id: str
    kinds: list[str]
    a: Row | None
    b: Row | None

    def fields(self) -> dict[str, dict]:
        """Return the changed fields of both versions, e.g. {"labels": {"a": [..], "b": [..]}}."""
        names = ["labels", "status"] if self.a is None or self.b is None else []
        for kind in self.kinds:
            names += FIELDS.get(kind, ())
        return {
            n: {"a": getattr(self.a, n, None), "b": getattr(self.b, n, None)}
            for n in dict.fromkeys(names)
        }


@dataclass
class ItemDiff:
    """The differences between two manifests: changed items by id, counts per class."""

    items: list[Change] = field(default_factory=list)
    classes: dict[str, Counter] = field(default_factory=dict)
    unchanged: int = 0

    def totals(self) -> dict[str, int]:
        """Return the items per kind of change, over all classes."""
        counts = Counter(k for c in self.items for k in c.kinds)
        return {k: counts.get(k, 0) for k in KINDS}

    def per_class(self) -> dict[str, dict[str, int]]:
        """Return the items per kind of change for each class, classes sorted."""
        return {c: {k: n.get(k, 0) for k in KINDS} for c, n in sorted(self.classes.items())}


def compare(old: list[Row], new: list[Row]) -> ItemDiff:
    """Return the item-level differences from `old` rows to `new` rows."""
    a = {r.item_id: r for r in old}
    b = {r.item_id: r for r in new}
    diff = ItemDiff()
    for item in sorted(a.keys() | b.keys()):
        x, y = a.get(item), b.get(item)
        if x is None:
            kinds = ["added"]
        elif y is None:
            kinds = ["removed"]
        else:
            kinds = changes(x, y)
        if not kinds:
            diff.unchanged += 1
            continue
        row = y if y is not None else x
        diff.items.append(Change(item, row.source_id, kinds, x, y))
        for cls in sorted(set(row.labels)) or [NO_CLASS]:
            diff.classes.setdefault(cls, Counter()).update(kinds)
    return diff


def flatten(data, prefix: str = "") -> dict[str, object]:
    """Return nested mappings as {"a.b.c": value}."""
    if not isinstance(data, dict) or (not data and prefix):
        return {prefix: data}
    out: dict[str, object] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def params_diff(old: dict, new: dict) -> list[dict]:
    """Return the params that differ: [{key, a, b}], keys sorted (absent: None)."""
    a, b = flatten(old), flatten(new)
    return [
        {"key": k, "a": a.get(k), "b": b.get(k)}
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]
