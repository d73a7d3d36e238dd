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

from stages.core.config import NoSettings, VideoSourceConf, non_negative, positive, setting
from stages.core.errors import ConfigError
from stages.core.selection import check_caps, ranker
from stages.sources import Context, Plan, VideoSource

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

    annotations: str = setting(
        "Local path or http(s) URL of the annotation CSV (label, youtube_id, time_start, time_end, "
        "split; read by name)."
    )
    split: Optional[str] = setting(  # noqa: UP045 - OmegaConf needs typing.Optional
        "Keep rows of this `split` (null: every row)."
    )
    cap: Optional[int] = setting(  # noqa: UP045
        "Default cap on clips per class (null: all); clips are picked by a seeded hash."
    )
    caps: dict[str, int] = setting("Per-class caps over `cap`, by the names used in `classes`.")
    seed: int = setting(
        "Seeds the hash that ranks clips inside a class (which clips the caps keep)."
    )
    mode: Mode = setting(
        "Where clips come from: youtube (yt-dlp sections of url_template) or archives (the mirror's"
        " tar.gz files in archive_list)."
    )
    url_template: str = setting("URL of a clip's video, with {id} for its YouTube id.")
    format: str = setting("yt-dlp format selector.")
    archive_list: Optional[str] = setting(  # noqa: UP045
        "archives mode: URL of the list of archive URLs (a k400_<split>_path.txt-style file)."
    )
    clip_workers: int = setting("Clips downloaded at once (yt-dlp and ffmpeg per clip).")
    socket_timeout: float = setting(
        "Seconds without data before a clip attempt fails (yt-dlp and ffmpeg)."
    )
    max_csv_bytes: int = setting("Cap on the annotation CSV and the archive list, in bytes.")
    max_clip_bytes: int = setting("Cap on one clip (a section, or an archive member), in bytes.")
    max_archive_bytes: int = setting("Cap on one archive download, in bytes.")

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

    classes: list[str] = setting(
        "Class names as in the CSV's `label` column (case-insensitive; unknown names fail with "
        "close matches); the order fixes the class ids."
    )
    fetch: KineticsFetch = MISSING
    clean: NoSettings = MISSING
    export: NoSettings = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        check_caps(self.fetch.caps, self.classes)


class Kinetics(VideoSource):
    """Kinetics-400/600/700-style clip lists (YouTube ids with start/end times)."""

    name = "kinetics"
    split_key = "youtube_id"  # the clips cut from one YouTube video
    schema = KineticsConf

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
