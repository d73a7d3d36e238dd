"""clean-annotations@tator: the image cleaner, keeping the classes of the boxes that survive."""

from __future__ import annotations

import json
from collections import Counter

from stages.core.store import Row, Store
from stages.families.clean import ImageCleaner
from stages.sources.tator.conf import SUMMARY, TatorConf


class TatorCleaner(ImageCleaner):
    """A frame is labelled by its boxes: one left without boxes is dropped."""

    def clean_rows(self, cfg: TatorConf, rows: list[Row], counts: Counter) -> list[Row]:
        """Keep the classes of the boxes that survived; drop frames left without boxes."""
        kept = []
        for row in rows:
            counts["boxes_unknown_class"] += sum(
                b["label"] == cfg.fetch.unknown_class for b in row.boxes
            )
            if not row.boxes:
                counts["frames_without_boxes"] += 1
                continue
            row.labels = sorted({b["label"] for b in row.boxes})
            kept.append(row)
        return kept

    def stats(self, cfg: TatorConf, store: Store) -> dict:
        """Return what fetch skipped that is not a box: dot, line and poly localizations."""
        path = store.root / SUMMARY
        if not path.is_file():
            return {}
        summary = json.loads(path.read_text(encoding="utf-8"))
        return {"non_box_skipped": summary.get("non_box_localizations", {})}
