"""Export a store to plain folders: per-class image folders, Pascal VOC, or frame folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core.errors import StoreError
from stages.core.files import atomic_write
from stages.core.store import SAFE, Store, frames_by_clip, member_name, payload_ext
from stages.formats.voc import voc_xml
from stages.pipeline.entry import run_main


def safe_dir(name: str) -> str:
    """Return a folder name that cannot escape its parent."""
    return SAFE.sub("_", name).strip("._") or "unnamed"


# Frame-folder layouts: <label>/<clip>/<prefix><n:05d>.jpg, numbered from 1.
FRAME_LAYOUTS = {"frames": "image_", "mmaction": "img_"}


def export_folders(store: Store, dest: Path, layout: str) -> int:
    """Write every ok item under dest in the chosen layout; return the number of items."""
    n = 0
    rows = [r for r in store.rows() if r.status == "ok"]
    numbers: dict[str, int] = {}
    if layout in FRAME_LAYOUTS:
        if any("clip" not in r.meta for r in rows):
            raise StoreError(f"--layout {layout} needs a frames store (extract-frames output)")
        # A clip's frames in order, numbered from 1 (clean may have dropped some).
        for frames in frames_by_clip(rows).values():
            numbers.update((row.item_id, n) for n, row in enumerate(frames, 1))
    for row, data in store.iter_payloads(rows):
        name = member_name(row.item_id, payload_ext(row) or ".jpg")
        if layout in FRAME_LAYOUTS:
            frame = f"{FRAME_LAYOUTS[layout]}{numbers[row.item_id]:05d}.jpg"
            for lab in row.labels or ["unlabeled"]:
                atomic_write(dest / safe_dir(lab) / safe_dir(row.meta["clip"]) / frame, data)
        elif layout == "classes":
            for lab in row.labels or ["unlabeled"]:
                atomic_write(dest / safe_dir(lab) / name, data)
        elif layout == "voc":
            atomic_write(dest / "JPEGImages" / name, data)
            atomic_write(dest / "Annotations" / (Path(name).stem + ".xml"), voc_xml(row, name))
        else:
            raise ValueError(f"unknown layout {layout!r}")
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    """Export a store directory to a folder layout."""
    ap = argparse.ArgumentParser(prog="python -m stages.export_folders", description=__doc__)
    ap.add_argument("store", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--layout", choices=["classes", "voc", *FRAME_LAYOUTS], default="classes")
    args = ap.parse_args(argv)
    n = export_folders(Store(args.store), args.dest, args.layout)
    print(f"exported {n} items to {args.dest} ({args.layout})")
    return 0


if __name__ == "__main__":
    run_main(main)
