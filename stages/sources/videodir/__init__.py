"""Video folders (Camio-style batch import): metadata from file names, per-camera settings.

Every video under `fetch.root` whose path (relative to the root, `/`-separated) matches
`fetch.regex` with `re.fullmatch` becomes an item: the regex's named groups give its camera,
its timestamp and any other metadata (e.g. a label folder). Items are identified by content,
`sha256-<hex of the file's SHA-256>`, so a renamed or moved file stays the same item and
files with equal bytes are one item listing all their paths. Per-camera settings override
the global ones: `fetch.cameras` (which cameras to import) and `frames.cameras` (how
extract-frames decodes that camera's clips), the way Camio's hook data does.

This module is what every stage imports (settings schema, hooks); the directory scan lives
in `scan.py`, imported when fetch runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stages.sources import Context, Plan, VideoSource
from stages.sources.videodir.conf import VideodirConf

if TYPE_CHECKING:
    from stages.families import Extractor


class Videodir(VideoSource):
    """A folder tree of videos; camera, time and labels read from each file's path."""

    name = "videodir"
    split_key = "camera"  # one camera's clips
    schema = VideodirConf
    local_input = True  # data/videodir/input, tracked by DVC as fetch@videodir's input

    def plan(self, cfg: VideodirConf, ctx: Context) -> Plan:
        """Scan the folder, hash every matching video into the object cache, return ok rows."""
        from stages.sources.videodir.scan import plan

        return plan(cfg, ctx)

    def extractor(self) -> Extractor:
        """Return the clip decoder with each camera's overrides applied."""
        from stages.sources.videodir.frames import CameraExtractor

        return CameraExtractor()


SOURCE = Videodir()
