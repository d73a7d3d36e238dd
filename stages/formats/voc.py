"""Pascal VOC annotation XML, safe for any id or label a remote source supplies."""

from __future__ import annotations

import re

from lxml import etree

from stages.core.store import Row

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
        # VOC is 1-based, inclusive pixel coordinates.
        _sub(bb, "xmin", int(round(b["x"])) + 1)
        _sub(bb, "ymin", int(round(b["y"])) + 1)
        _sub(bb, "xmax", int(round(b["x"] + b["w"])))
        _sub(bb, "ymax", int(round(b["y"] + b["h"])))
    return etree.tostring(root, pretty_print=True, xml_declaration=False, encoding="utf-8")
