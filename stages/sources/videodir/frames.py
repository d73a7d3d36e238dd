"""extract-frames@videodir: clips decoded with their camera's frame settings."""

from __future__ import annotations

from stages.core.config import FramesConf
from stages.core.store import Row
from stages.families.frames import VideoExtractor
from stages.sources.videodir.conf import VideodirConf


class CameraExtractor(VideoExtractor):
    """The shared clip decoder; each clip gets its camera's overrides."""

    def settings(self, cfg: VideodirConf, row: Row) -> FramesConf:
        """Return the extract-frames settings for a clip: its camera's overrides applied."""
        return cfg.frames.for_camera(row.meta.get("camera"))
