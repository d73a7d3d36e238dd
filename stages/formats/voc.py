"""Pascal VOC: annotation XML safe for any id or label a remote source supplies, and the
label map and image-set lists VOC readers need to find the dataset.

Readers (Datumaro, CVAT) find a VOC dataset by its `ImageSets/Main/<subset>.txt` lists
(one image id per line, no extension; a subset name without `_`) and accept class names
outside the 20 VOC classes only when `labelmap.txt` (`name:r,g,b:parts:actions` lines)
declares them. Names a label map cannot hold (with `:` or line breaks) are declared in
`dataset_meta.json` as well, which Datumaro reads first.
"""

from __future__ import annotations

import json
import re

from lxml import etree

from stages.core.boxes import voc_box
from stages.core.store import Row

LABELMAP_HEADER = "# label:color_rgb:parts:actions\n"

# Characters XML 1.0 cannot hold (lxml refuses them): C0 controls but tab/LF/CR, lone
# surrogates, U+FFFE/U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value: object) -> str:
    """Return text XML can hold: characters it cannot are written as \\xNN or \\uNNNN."""
    text = str(value)
    return _NOT_XML.sub(
        lambda m: (
            f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}"
        ),
        text,
    )


def _sub(parent, tag: str, text: object):
    node = etree.SubElement(parent, tag)
    node.text = xml_text(text)
    return node


def voc_xml(row: Row, filename: str, folder: str = "JPEGImages") -> bytes:
    """Return a Pascal VOC annotation for one item (boxes in 1-based inclusive pixels)."""
    root = etree.Element("annotation")
    _sub(root, "folder", folder)
    _sub(root, "filename", filename)
    src = etree.SubElement(root, "source")
    _sub(src, "database", row.source)
    _sub(src, "id", row.source_id)
    size = etree.SubElement(root, "size")
    _sub(size, "width", row.width or 0)
    _sub(size, "height", row.height or 0)
    _sub(size, "depth", 3)
    _sub(root, "segmented", 0)
    for lab in row.labels:
        if not any(b["label"] == lab for b in row.boxes):
            _sub(root, "label", lab)  # image-level label without a box
    for b in row.boxes:
        obj = etree.SubElement(root, "object")
        _sub(obj, "name", b["label"])
        _sub(obj, "pose", "Unspecified")
        _sub(obj, "truncated", 0)
        _sub(obj, "difficult", 0)
        bb = etree.SubElement(obj, "bndbox")
        # VOC is 1-based, inclusive pixel coordinates (core.boxes states the rule).
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), voc_box(b), strict=True):
            _sub(bb, tag, value)
    return etree.tostring(root, pretty_print=True, xml_declaration=False, encoding="utf-8")


def color(index: int) -> tuple[int, int, int]:
    """Return the VOC palette colour of a class index (background is 0)."""
    r = g = b = 0
    for shift in range(7, -1, -1):
        r |= (index >> 0 & 1) << shift
        g |= (index >> 1 & 1) << shift
        b |= (index >> 2 & 1) << shift
        index >>= 3
    return r, g, b


def labelmap(names: list[str]) -> tuple[str, bytes | None]:
    """Return labelmap.txt for the class names, and dataset_meta.json when one needs it."""
    # No `background` line: readers do not need one, and a class may have that name.
    lines = [LABELMAP_HEADER]
    shown = [xml_text(n) for n in names]
    for i, name in enumerate(shown, 1):
        r, g, b = color(i)
        lines.append(f"{name}:{r},{g},{b}::\n")
    meta = None
    if any(
        ":" in n or "\n" in n or "\r" in n or n != n.strip() or n.startswith("#") for n in shown
    ):
        meta = json.dumps({"labels": shown}, indent=1).encode() + b"\n"
    return "".join(lines), meta
