"""Export a store to familiar folders: per-class images, Pascal VOC, COCO, or frame folders.

Run by hand (`python -m stages.export_folders STORE DEST --layout voc`) or as the pipeline's
`export-folders@<source>-<layout>` stage for the layouts a source lists under `exports:`.
The folder is written beside DEST and renamed into place whole, so DEST never holds a
partial export.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from stages.core.config import Layout
from stages.core.errors import StoreError
from stages.core.files import atomic_write
from stages.core.store import Store, file_stem, frames_by_clip, payload_ext, safe_name
from stages.formats.coco import coco_instances
from stages.formats.voc import labelmap, voc_xml
from stages.pipeline.entry import run_main

# Until splits exist, every item is in one subset with Datumaro's name for it.
SUBSET = "default"
# Frame-folder layouts: <label>/<clip>/<prefix><n:05d>.jpg, numbered from 1.
FRAME_LAYOUTS = {Layout.frames.value: "image_", Layout.mmaction.value: "img_"}


def safe_dir(name: str) -> str:
    """Return a folder name that cannot escape its parent."""
    return safe_name(name, "unnamed")


def export_folders(store: Store, dest: Path, layout: str, names: list[str] | None = None) -> int:
    """Write every ok item under dest in the chosen layout; return the number of items.

    `names` are the class names in id order (default: those the store recorded, else the
    labels found, sorted)."""
    layout = Layout(layout).value
    rows = [r for r in store.rows() if r.status == "ok" and r.shard is not None]
    if layout in ("voc", "coco") and any(r.meta.get("box_units") == "normalized" for r in rows):
        raise StoreError(
            f"{store.root} holds boxes as the source gave them (normalised): export the "
            "clean store (clean-annotations output), which has them in pixels"
        )
    if names is None:
        names = store.classes or sorted({lab for r in rows for lab in r.labels})
    dest = Path(dest)
    work = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        n = _write(store, rows, work, layout, names)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return n


def _write(store: Store, rows, out: Path, layout: str, names: list[str]) -> int:
    numbers: dict[str, int] = {}
    if layout in FRAME_LAYOUTS:
        if any("clip" not in r.meta for r in rows):
            raise StoreError(f"--layout {layout} needs a frames store (extract-frames output)")
        # A clip's frames in order, numbered from 1 (clean may have dropped some).
        for frames in frames_by_clip(rows).values():
            numbers.update((row.item_id, n) for n, row in enumerate(frames, 1))
    files = {r.item_id: file_stem(r.item_id) + (payload_ext(r) or ".jpg") for r in rows}
    listed = []
    for row, data in store.iter_payloads(rows):
        name = files[row.item_id]
        if layout in FRAME_LAYOUTS:
            frame = f"{FRAME_LAYOUTS[layout]}{numbers[row.item_id]:05d}.jpg"
            for lab in row.labels or ["unlabeled"]:
                atomic_write(out / safe_dir(lab) / safe_dir(row.meta["clip"]) / frame, data)
        elif layout == "classes":
            for lab in row.labels or ["unlabeled"]:
                atomic_write(out / safe_dir(lab) / name, data)
        elif layout == "voc":
            atomic_write(out / "JPEGImages" / name, data)
            atomic_write(out / "Annotations" / (Path(name).stem + ".xml"), voc_xml(row, name))
        elif layout == "coco":
            atomic_write(out / "images" / SUBSET / name, data)
        listed.append(row)
    listed.sort(key=lambda r: r.item_id)
    if layout == "voc":
        lines = "".join(f"{Path(files[r.item_id]).stem}\n" for r in listed)
        atomic_write(out / "ImageSets" / "Main" / f"{SUBSET}.txt", lines)
        text, meta = labelmap(names)
        atomic_write(out / "labelmap.txt", text)
        if meta is not None:
            atomic_write(out / "dataset_meta.json", meta)
    elif layout == "coco":
        doc = coco_instances([(r, files[r.item_id]) for r in listed], names)
        atomic_write(out / "annotations" / f"instances_{SUBSET}.json", doc)
    return len(listed)


def main(argv: list[str] | None = None) -> int:
    """Export a store directory to a folder layout."""
    ap = argparse.ArgumentParser(prog="python -m stages.export_folders", description=__doc__)
    ap.add_argument("store", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--layout", choices=[x.value for x in Layout], default="classes")
    args = ap.parse_args(argv)
    n = export_folders(Store(args.store), args.dest, args.layout)
    print(f"exported {n} items to {args.dest} ({args.layout})")
    return 0


if __name__ == "__main__":
    run_main(main)
