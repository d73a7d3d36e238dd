"""LILA selection and rows: classes by common or scientific name, caps, budget, image URLs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote

from stages.core.errors import MetadataError
from stages.core.selection import labels_of, match_names, pick
from stages.core.store import Row
from stages.formats.coco_ct import Metadata, category_index, dimension, paused_gc, safe_relpath


@dataclass
class Selection:
    """Images chosen per class, in a stable order, with what was left out and why."""

    image_labels: dict[str, list[str]]  # image id -> class names (config order)
    order: list[str]  # image ids, sorted
    stats: dict
    class_of: dict = field(default_factory=dict)  # category id -> class names (config order)


class ClassSelector:
    """Choose images from COCO Camera Traps metadata as it streams by (see coco_ct.Selector)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.names = list(cfg.classes)
        self.result: Selection | None = None

    def categories(self, categories: list[dict]) -> set:
        """Return the category ids of the wanted classes (unknown names fail here)."""
        cat_map = match_names(category_index(categories), self.names)
        return set().union(*cat_map.values())

    def select(self, meta: Metadata) -> set[str]:
        """Choose images per class with the shared seeded ranking, caps and byte budget."""
        f = self.cfg.fetch
        cat_map = match_names(category_index(meta.categories), self.names)
        class_of: dict = {}
        for name, ids in cat_map.items():
            for cid in ids:
                class_of.setdefault(cid, []).append(name)
        per_class: dict[str, set[str]] = {n: set() for n in self.names}
        get = class_of.get
        for image_id, hit in zip(meta.ann_image, map(get, meta.ann_cat), strict=True):
            if hit is not None:
                for name in hit:
                    per_class[name].add(image_id)
        picked = pick(
            per_class,
            self.names,
            seed=f.seed,
            cap=f.cap,
            caps=f.caps,
            byte_budget=f.byte_budget,
            est_bytes=f.est_bytes_per_image,
        )
        # Labels come from every wanted annotation of a chosen image, not only the one that won it.
        labels, counts = labels_of(per_class, self.names, picked.chosen)
        stats = {**picked.stats, "selected": counts}
        self.result = Selection(labels, sorted(labels), stats, class_of)
        return set(labels)


# What quote(rel, safe="/") leaves as it is: most file names need no encoding at all.
_URL_SAFE = re.compile(r"[A-Za-z0-9_.~/-]*")


def image_url(base_url: str, rel: str) -> str:
    """Return an image's URL: the base plus the percent-encoded relative path."""
    # File names may hold spaces, '#', '%', '?' or non-ASCII characters.
    if _URL_SAFE.fullmatch(rel):
        return f"{base_url}/{rel}"
    return f"{base_url}/{quote(rel, safe='/')}"


def build_rows(meta: Metadata, sel: Selection, dataset: str, base_url: str, source: str):
    """Turn selected images into pending rows with URLs, sizes, boxes and metadata."""
    with paused_gc():
        return _build_rows(meta, sel, dataset, base_url, source)


def _build_rows(meta: Metadata, sel: Selection, dataset: str, base_url: str, source: str):
    boxes: dict[str, list[dict]] = {}
    wanted = sel.image_labels
    for idx, (kind, box) in sorted(meta.ann_box.items()):
        image_id = meta.ann_image[idx]
        names = sel.class_of.get(meta.ann_cat[idx])
        if names is None or image_id not in wanted:
            continue
        im = meta.images[image_id]
        if kind == "bbox_relative":
            w, h = dimension(im, "width"), dimension(im, "height")
            if not w or not h:
                continue  # cannot place a relative box without the image size
            box = [box[0] * w, box[1] * h, box[2] * w, box[3] * h]
        x, y, w, h = (float(v) for v in box)
        boxes.setdefault(image_id, []).append({"label": names[0], "x": x, "y": y, "w": w, "h": h})
    prefix = f"{dataset}/"
    images, no_boxes = meta.images, []
    rows = []
    for image_id in sel.order:
        im = images[image_id]
        name = im.get("file_name")
        if name is None:
            raise MetadataError(f"image {image_id!r} lacks the required field 'file_name'")
        rel = safe_relpath(name)
        width, height = im.get("width"), im.get("height")
        if type(width) is not int or type(height) is not int:  # noqa: E721 - fast path
            width, height = dimension(im, "width"), dimension(im, "height")
        info = {"dataset": dataset, "file_name": rel}
        for key in ("location", "datetime", "seq_id"):
            value = im.get(key)
            if value is not None:
                info[key] = value if type(value) is str else str(value)  # noqa: E721
        row = Row(
            prefix + image_id,
            source,
            image_id,
            image_url(base_url, rel),
            None,
            None,
            width,
            height,
            wanted[image_id],
            None,
            boxes.get(image_id, no_boxes),
            "pending",
            "",
            None,
            None,
            info,
        )
        if im.get("corrupt"):
            row.status, row.reason = "corrupt", "marked corrupt in metadata"
        rows.append(row)
    return rows
