"""Kinetics-style clip lists: an annotation CSV of YouTube ids and windows, clips from yt-dlp
sections or from the pre-trimmed tar.gz archives of the public mirror.

Clips fetched with yt-dlp are copy-mode cuts (no re-encoding, only the needed byte ranges are
transferred): such a cut starts at the keyframe before `time_start`, so each row records the
exact window, `meta.window = [0, time_end - time_start]` on the stored clip's timeline, and
extract-frames keeps exactly the frames inside it. Archive clips are already trimmed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Optional

from omegaconf import MISSING

from stages.core.config import NoSettings, VideoSourceConf, non_negative, positive
from stages.core.errors import ConfigError
from stages.core.selection import check_caps, ranker
from stages.sources import Context, Plan, Source

if TYPE_CHECKING:
    from stages.core.store import Row
    from stages.net.ledger import Result


class Mode(Enum):
    """Where clips come from."""

    youtube = "youtube"
    archives = "archives"


@dataclass
class KineticsFetch:
    """What fetch@kinetics reads: the clip list, the selection, the clip source and limits."""

    annotations: str = MISSING  # a local path or an http(s) URL of the annotation CSV
    split: Optional[str] = MISSING  # noqa: UP045 - OmegaConf needs typing.Optional
    cap: Optional[int] = MISSING  # noqa: UP045
    caps: dict[str, int] = MISSING
    seed: int = MISSING
    mode: Mode = MISSING
    url_template: str = MISSING
    format: str = MISSING
    archive_list: Optional[str] = MISSING  # noqa: UP045
    clip_workers: int = MISSING
    socket_timeout: float = MISSING
    max_csv_bytes: int = MISSING
    max_clip_bytes: int = MISSING
    max_archive_bytes: int = MISSING

    def __post_init__(self) -> None:
        where = "sources.kinetics.fetch"
        non_negative(where, cap=self.cap)
        non_negative(f"{where}.caps", **self.caps)
        positive(
            where,
            clip_workers=self.clip_workers,
            socket_timeout=self.socket_timeout,
            max_csv_bytes=self.max_csv_bytes,
            max_clip_bytes=self.max_clip_bytes,
            max_archive_bytes=self.max_archive_bytes,
        )
        if "{id}" not in self.url_template:
            raise ConfigError(f"{where}.url_template must contain {{id}}: {self.url_template!r}")
        if self.mode is Mode.archives and not self.archive_list:
            raise ConfigError(f"{where}.archive_list is required when mode is archives")


@dataclass
class KineticsConf(VideoSourceConf):
    """conf/source/kinetics.yaml."""

    fetch: KineticsFetch = MISSING
    clean: NoSettings = MISSING
    export: NoSettings = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        check_caps(self.fetch.caps, self.classes)


class Kinetics(Source):
    """Kinetics-400/600/700-style clip lists (YouTube ids with start/end times)."""

    name = "kinetics"
    split_key = "youtube_id"  # the clips cut from one YouTube video
    schema = KineticsConf
    video = True

    def split_group(self, cfg: KineticsConf, row: Row) -> tuple[str, str | None]:
        """Return the clip's YouTube video as its group, and the CSV's own split if given."""
        group, _ = super().split_group(cfg, row)
        return group, row.meta.get("split") or None

    def rank(self, cfg: KineticsConf) -> Callable[[Row], bytes]:
        """Return the selection's rank of a clip (it ranks clip ids)."""
        rank = ranker(cfg.fetch.seed)
        return lambda row: rank(row.item_id)

    def plan(self, cfg: KineticsConf, ctx: Context) -> Plan:
        """Read the clip list, select clips per class, and return rows (archives: fetched)."""
        from stages.sources.kinetics.fetch import plan

        return plan(cfg, ctx)

    def download(self, cfg: KineticsConf, rows: list[Row], ctx: Context) -> dict[str, Result]:
        """Fetch pending clips as yt-dlp sections (archive clips are fetched while planning)."""
        from stages.sources.kinetics.youtube import download

        return download(cfg, rows, ctx)


SOURCE = Kinetics()
