"""COCO instances JSON (object detection) for a clean store.

Category ids are the class ids plus one (COCO keeps 0 for "no category"), image ids count
from 1 in item order, annotation ids from 1 in (item, box) order, and every number a reader
types as int is an int (`width`, `height`, `iscrowd`, boxes on whole pixels by core.boxes).
"""

from __future__ import annotations

import json

from stages.core.boxes import coco_box
from stages.core.store import Row


def coco_instances(items: list[tuple[Row, str]], names: list[str]) -> bytes:
    """Return the instances JSON for (row, file name) pairs (boxes of other classes left out)."""
    category = {name: i for i, name in enumerate(names, 1)}
    images, annotations = [], []
    for image_id, (row, file_name) in enumerate(items, 1):
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": int(row.width or 0),
                "height": int(row.height or 0),
            }
        )
        for box in row.boxes:
            if box["label"] not in category:
                continue
            bbox = coco_box(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category[box["label"]],
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                    "segmentation": [],
                }
            )
    doc = {
        "info": {"description": "exported by stages.export_folders", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i, "name": name, "supercategory": ""} for name, i in category.items()
        ],
    }
    return json.dumps(doc, indent=1, ensure_ascii=False).encode() + b"\n"
