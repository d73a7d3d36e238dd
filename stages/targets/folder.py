"""The `folder` import target: files copied into `<root>/<section>/`, for tests and air-gapped use.

Each file lands as `<timestamp>_<sha256[:16]><ext>` beside a sidecar JSON holding its
attributes (sha256, camera, timestamp, location, settings); the sidecar is written last, so
a file without one is an interrupted copy and is replaced. Labels are read from
`<file>.labels.json` where an annotation tool put one: a list of
`{"label", "frame", "frame_end", "box": [x, y, w, h] or null}`. Names never come from elsewhere
than the content hash and a parsed timestamp, so nothing escapes the root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from stages.core.config import FetchConf, ImportConf
from stages.core.errors import MetadataError
from stages.core.files import atomic_path, atomic_write
from stages.core.store import safe_name
from stages.targets import Target, TargetLabel, Upload, gone_message

SIDECAR = ".json"
LABELS = ".labels.json"
HEX = re.compile(r"[0-9a-f]{64}")


class FolderTarget(Target):
    """A directory tree standing in for a labelling platform."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def register(self, camera: str, settings: dict) -> str:
        """Create the camera's section folder; return its name."""
        section = safe_name(str(settings.get("section") or camera), "camera")
        (self.root / section).mkdir(exist_ok=True)
        return section

    def existing(self) -> dict[str, str]:
        """Return sha256 -> relative path of every complete file (one with its sidecar)."""
        found = {}
        for side in sorted(self.root.glob(f"*/*{SIDECAR}")):
            try:
                attrs = json.loads(side.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # not ours, or damaged: the file is sent again
            sha = attrs.get("sha256") if isinstance(attrs, dict) else None
            media = side.with_suffix("")
            if isinstance(sha, str) and HEX.fullmatch(sha) and media.is_file():
                found.setdefault(sha, media.relative_to(self.root).as_posix())
        return found

    def upload(self, item: Upload, place: str) -> str:
        """Copy the file into its section, then write its sidecar; return its relative path."""
        stamp = re.sub(r"[^0-9]", "", item.timestamp)[:14] or "unknown"
        ext = safe_name(os.path.splitext(item.name)[1].lower(), "")[:10]
        rel = f"{place}/{stamp}_{item.sha256[:16]}{'.' + ext if ext else ''}"
        dest = self.root / rel
        with item.open() as src, atomic_path(dest) as tmp, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        attrs = {
            "sha256": item.sha256,
            "name": item.name,
            "camera": item.camera,
            "timestamp": item.timestamp,
            "location": list(item.location) if item.location else None,
            "settings": item.settings,
        }
        atomic_write(Path(f"{dest}{SIDECAR}"), json.dumps(attrs, sort_keys=True, indent=1) + "\n")
        return rel

    def labels(self, ids: list[str]) -> tuple[list[TargetLabel], dict[str, int]]:
        """Return the labels in each file's `.labels.json` (none: no labels yet)."""
        gone = [rel for rel in ids if not (self.root / rel).is_file()]
        if gone:
            raise MetadataError(gone_message(gone))
        out, skipped = [], {"without_class": 0}
        for rel in ids:
            path = self.root / f"{rel}{LABELS}"
            if not path.is_file():
                continue
            try:
                items = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(items, list):
                    raise ValueError("not a list")
                for item in items:
                    label = str(item.get("label") or "").strip()
                    if not label:
                        skipped["without_class"] += 1
                        continue
                    box = item.get("box")
                    if box is not None and len(box) != 4:
                        raise ValueError(f"box {box!r} is not [x, y, w, h]")
                    out.append(
                        TargetLabel(
                            rel,
                            label,
                            _frame(item.get("frame")),
                            _frame(item.get("frame_end")),
                            tuple(float(v) for v in box) if box is not None else None,
                        )
                    )
            except (ValueError, TypeError, AttributeError) as exc:
                raise MetadataError(f"labels of {rel} ({path.name}) are malformed: {exc}") from None
        return out, skipped


def _frame(value) -> int | None:
    """Return a frame number (None stays None); refuse anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"frame {value!r} is not a non-negative integer")
    return value


def build(cfg: ImportConf, retry: FetchConf) -> FolderTarget:
    """Return the folder target import_to describes (a local copy needs no retries)."""
    return FolderTarget(cfg.folder)
