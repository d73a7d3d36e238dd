"""Read a VOC folder or a COCO folder with Datumaro; print what it found as JSON.

Runs in Datumaro's own virtualenv (`make .venv-datumaro`): Datumaro pins other versions of
pillow and pyarrow than the project, so it never joins the project's environment.
Usage: python datumaro_read.py voc_detection|coco_instances DIR
Prints {"labels": [...], "items": {id: {"image": bool, "size": [w, h] | null,
"boxes": [[label, x, y, w, h], ...]}}}; any import problem fails (exit 1).
"""

import json
import os
import sys

from datumaro import Dataset
from datumaro.components.annotation import AnnotationType
from datumaro.components.contexts.importer import FailingImportErrorPolicy


def main(fmt: str, path: str) -> int:
    # VOC boxes are 1-based inclusive: read them that way, so both formats give pixel edges.
    extra = {"coordinate_mode": "voc-one-based"} if fmt.startswith("voc") else {}
    ds = Dataset.import_from(path, fmt, error_policy=FailingImportErrorPolicy(), **extra)
    labels = [c.name for c in ds.categories()[AnnotationType.label]]
    items = {}
    for item in ds:
        media = item.media
        boxes = [
            [labels[a.label], *a.get_bbox()]
            for a in item.annotations
            if a.type == AnnotationType.bbox
        ]
        size = getattr(media, "size", None)  # (height, width) when known
        items[item.id] = {
            "image": bool(getattr(media, "path", None)) and os.path.isfile(media.path),
            "size": [size[1], size[0]] if size else None,
            "boxes": boxes,
        }
    print(json.dumps({"labels": labels, "items": items}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
