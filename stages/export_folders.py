"""Export a store to plain folders: per-class image folders or Pascal VOC."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lxml import etree

from stages.cli import run_main
from stages.store import SAFE, Row, Store, member_name, payload_ext


def safe_dir(name: str) -> str:
    """Return a folder name that cannot escape its parent."""
    return SAFE.sub("_", name).strip("._") or "unnamed"


def put(path: Path, data: bytes) -> None:
    """Write a file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def voc_xml(row: Row, filename: str) -> bytes:
    """Return a Pascal VOC annotation for one item."""
    root = etree.Element("annotation")
    etree.SubElement(root, "folder").text = "JPEGImages"
    etree.SubElement(root, "filename").text = filename
    src = etree.SubElement(root, "source")
    etree.SubElement(src, "database").text = row.source
    etree.SubElement(src, "id").text = row.source_id
    size = etree.SubElement(root, "size")
    etree.SubElement(size, "width").text = str(row.width or 0)
    etree.SubElement(size, "height").text = str(row.height or 0)
    etree.SubElement(size, "depth").text = "3"
    etree.SubElement(root, "segmented").text = "0"
    for lab in row.labels:
        if not any(b["label"] == lab for b in row.boxes):
            etree.SubElement(root, "label").text = lab  # image-level label without a box
    for b in row.boxes:
        obj = etree.SubElement(root, "object")
        etree.SubElement(obj, "name").text = b["label"]
        etree.SubElement(obj, "pose").text = "Unspecified"
        etree.SubElement(obj, "truncated").text = "0"
        etree.SubElement(obj, "difficult").text = "0"
        bb = etree.SubElement(obj, "bndbox")
        # VOC is 1-based, inclusive pixel coordinates.
        etree.SubElement(bb, "xmin").text = str(int(round(b["x"])) + 1)
        etree.SubElement(bb, "ymin").text = str(int(round(b["y"])) + 1)
        etree.SubElement(bb, "xmax").text = str(int(round(b["x"] + b["w"])))
        etree.SubElement(bb, "ymax").text = str(int(round(b["y"] + b["h"])))
    return etree.tostring(root, pretty_print=True, xml_declaration=False, encoding="utf-8")


def export_folders(store: Store, dest: Path, layout: str) -> int:
    """Write every ok item under dest in the chosen layout; return the number of items."""
    n = 0
    for row, data in store.iter_payloads([r for r in store.rows() if r.status == "ok"]):
        name = member_name(row.item_id, payload_ext(row) or ".jpg")
        if layout == "classes":
            for lab in row.labels or ["unlabeled"]:
                put(dest / safe_dir(lab) / name, data)
        elif layout == "voc":
            put(dest / "JPEGImages" / name, data)
            put(dest / "Annotations" / (Path(name).stem + ".xml"), voc_xml(row, name))
        else:
            raise ValueError(f"unknown layout {layout!r}")
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    """Export a store directory to a folder layout."""
    ap = argparse.ArgumentParser(prog="python -m stages.export_folders", description=__doc__)
    ap.add_argument("store", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--layout", choices=["classes", "voc"], default="classes")
    args = ap.parse_args(argv)
    n = export_folders(Store(args.store), args.dest, args.layout)
    print(f"exported {n} items to {args.dest} ({args.layout})")
    return 0


if __name__ == "__main__":
    run_main(main)
