"""The settings of the Videodir source: the schema of conf/source/videodir.yaml and what its
modules share (imported by them, never the package's __init__: no import cycle)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from omegaconf import MISSING

from stages.core.config import (
    FramesConf,
    ImportConf,
    NoSettings,
    VideoSourceConf,
    check_frames,
    overlay,
    setting,
)
from stages.core.errors import ConfigError

if TYPE_CHECKING:
    pass


REQUIRED_GROUPS = ("camera", "timestamp")
# Item meta keys the source or extract-frames set: a regex group of that name would clash.
RESERVED_GROUPS = frozenset({"paths", "files", "ext", "path", "window", "clip"})
EPOCH = "epoch"  # fetch.timestamp_format for Unix seconds


class OnUnmatched(Enum):
    """What fetch does with a video whose path does not match the regex (or its timestamp)."""

    skip = "skip"  # count and list it in the fetch metrics
    fail = "fail"  # stop with an error naming the files


@dataclass
class CameraFetch:
    """Per-camera fetch settings (`fetch.cameras.<camera>`)."""

    include: bool = setting("Whether this camera's videos are fetched.")


@dataclass
class VideodirFetch:
    """What fetch@videodir reads: where the videos are and how their names are read."""

    root: str = setting(
        "The videos' folder, relative to the repository root: data/videodir/input, which DVC tracks"
        " as fetch's input."
    )
    extensions: list[str] = setting("File extensions taken as videos (any case).")
    regex: str = setting(
        "Matched with re.fullmatch against each video's path relative to root, /-separated. Named "
        "groups: camera and timestamp are required, label_group (if set) gives the label, any other"
        " is kept in the item's meta. Symlinks leading out of root are skipped."
    )
    timestamp_format: str = setting(
        "strptime format of the timestamp group, or `epoch` (Unix seconds)."
    )
    timezone: str = setting(
        "IANA zone of timestamps without an offset (e.g. Europe/Berlin); stored as UTC."
    )
    on_unmatched: OnUnmatched = setting(
        "A video whose path does not match: skip (count and list it in the fetch report) or fail "
        "(stop with an error)."
    )
    label_group: Optional[str] = setting(  # noqa: UP045 - OmegaConf needs typing.Optional
        "The regex group holding the label (null: every item gets default_label)."
    )
    default_label: Optional[str] = setting(  # noqa: UP045
        "Label of items whose label group is empty (required when label_group is null)."
    )
    include_cameras_by_default: bool = setting(
        "Whether cameras not listed under `cameras` are fetched."
    )
    cameras: dict[str, CameraFetch] = setting(
        "Per camera (the camera group's value): include true or false."
    )

    def __post_init__(self) -> None:
        where = "sources.videodir.fetch"
        if not self.root.strip():
            raise ConfigError(f"{where}.root is empty: name the folder of videos")
        exts = [e.strip().lower() for e in self.extensions]
        bad = [e for e in exts if len(e) < 2 or not e.startswith(".") or "/" in e]
        if not exts or bad:
            raise ConfigError(
                f"{where}.extensions must list file extensions like .mp4, not {self.extensions}"
            )
        self.extensions = sorted(set(exts))
        compile_regex(self.regex, self.label_group, where)
        check_timestamp_format(self.timestamp_format, where)
        zone(self.timezone, where)


@dataclass
class CameraFrames:
    """Per-camera extract-frames settings: null keeps the global value."""

    short_side: Optional[int] = setting(  # noqa: UP045
        "This camera's short side in pixels; null: the global frames.short_side."
    )
    fps: Optional[float] = setting(  # noqa: UP045
        "This camera's frames per second; null: the global frames.fps."
    )
    num_frames: Optional[int] = setting(  # noqa: UP045
        "This camera's evenly spaced frames per clip; null: the global frames.num_frames."
    )
    quality: Optional[int] = setting(  # noqa: UP045
        "This camera's JPEG quality 1..100; null: the global frames.quality."
    )


@dataclass
class VideodirFrames(FramesConf):
    """extract-frames settings: the global ones plus per-camera overrides (`cameras`)."""

    cameras: dict[str, CameraFrames] = setting(
        "Per camera (the camera group's value), all four keys (short_side, fps, num_frames, "
        "quality); null keeps the global value."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, cam in self.cameras.items():
            check_frames(f"sources.videodir.frames.cameras.{name}", cam)

    def for_camera(self, camera: str | None) -> FramesConf:
        """Return the settings for one camera's clips: its overrides over the global values."""
        over = self.cameras.get(camera) if camera is not None else None
        keys = ("short_side", "fps", "num_frames", "quality")
        return FramesConf(**overlay(self, over, keys), interpolation=self.interpolation)


@dataclass
class VideodirConf(VideoSourceConf):
    """conf/source/videodir.yaml."""

    classes: list[str] = setting(
        "Class names in id order; labels from the regex group fetch.label_group names are matched "
        "to them case-insensitively (unknown ones are counted in the fetch metrics, the item kept "
        "unlabelled)."
    )
    fetch: VideodirFetch = MISSING
    frames: VideodirFrames = MISSING
    clean: NoSettings = MISSING
    export: NoSettings = MISSING
    import_to: ImportConf = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        where = "sources.videodir.fetch"
        f = self.fetch
        if f.default_label is None:
            if f.label_group is None:
                raise ConfigError(
                    f"{where}: set label_group (a regex group holding the label) or "
                    "default_label (the label of every item)"
                )
            return
        canonical = class_index(self.classes).get(f.default_label.strip().lower())
        if canonical is None:
            raise ConfigError(
                f"{where}.default_label {f.default_label!r} is not one of classes {self.classes}"
            )
        f.default_label = canonical


def class_index(classes: list[str]) -> dict[str, str]:
    """Map lower-case class names to the names used in `classes`."""
    return {c.lower(): c for c in classes}


def compile_regex(regex: str, label_group: str | None, where: str) -> re.Pattern:
    """Compile fetch.regex; raise one ConfigError unless it has the groups fetch needs."""
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"{where}.regex does not compile: {exc}: {regex!r}") from None
    missing = [g for g in REQUIRED_GROUPS if g not in pattern.groupindex]
    if missing:
        raise ConfigError(
            f"{where}.regex lacks the named group(s) {', '.join(missing)}: it needs "
            f"(?P<camera>...) and (?P<timestamp>...), e.g. "
            rf"(?P<camera>[^/]+)/(?P<timestamp>\d{{8}}_\d{{6}})\.mp4; got {regex!r}"
        )
    clash = sorted(RESERVED_GROUPS & set(pattern.groupindex))
    if clash:
        raise ConfigError(
            f"{where}.regex: group name(s) {', '.join(clash)} are reserved for item metadata; "
            "rename them"
        )
    if label_group in REQUIRED_GROUPS:
        raise ConfigError(f"{where}.label_group must name a group other than camera and timestamp")
    if label_group is not None and label_group not in pattern.groupindex:
        raise ConfigError(
            f"{where}.label_group {label_group!r} is not a named group of regex "
            f"(groups: {', '.join(pattern.groupindex)})"
        )
    return pattern


def check_timestamp_format(fmt: str, where: str) -> None:
    """Refuse a strptime format that cannot read back what it writes (a typo, like %s)."""
    if fmt == EPOCH:
        return
    sample = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    try:
        datetime.strptime(sample.strftime(fmt), fmt)
    except ValueError as exc:
        raise ConfigError(
            f"{where}.timestamp_format {fmt!r} is not a usable strptime format ({exc}); "
            f"use e.g. %Y%m%d_%H%M%S, or {EPOCH} for Unix seconds"
        ) from None


def zone(name: str, where: str = "sources.videodir.fetch") -> ZoneInfo:
    """Return the IANA time zone of naive timestamps; raise ConfigError for unknown names."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            f"{where}.timezone {name!r} is not an IANA time zone name (like UTC or Europe/Berlin)"
        ) from None
