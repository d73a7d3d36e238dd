"""The settings of the Figure8 source: the schema of conf/source/figure8.yaml and what its
modules share (imported by them, never the package's __init__: no import cycle)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Optional
from urllib.parse import urlsplit

from omegaconf import MISSING

from stages.core.config import SourceConf, non_negative, positive, setting
from stages.core.errors import ConfigError
from stages.core.origins import parse_origins

if TYPE_CHECKING:
    pass


# Report types whose CSV has one row per image with its `annotation` (the others hold
# contributors, test questions or the uploaded source rows: nothing to build labels from).
ANNOTATED_REPORTS = ("full", "aggregated")


class ReportType(Enum):
    """The report types Figure Eight's API serves (`/v1/jobs/<id>.csv?type=`)."""

    full = "full"
    aggregated = "aggregated"
    json = "json"
    gold_report = "gold_report"
    workset = "workset"
    source = "source"


class FramesMode(Enum):
    """How extract-frames matches annotations and raw frames in size."""

    chop_raw = "chop_raw"  # raw frames cut into the annotated positions (movies per position)
    recombine = "recombine"  # positions stitched into full frames (one movie per part)


@dataclass
class Figure8Fetch:
    """What fetch@figure8 reads: the API, the job, the input folder."""

    api: str = setting(
        "API base URL: https only (loopback aside); https://api.appen.com/v1, formerly "
        "https://api.figure-eight.com/v1."
    )
    job_id: int = setting("The Figure Eight job's id.")
    report_type: ReportType = setting(
        "full or aggregated: the reports with an annotation per image."
    )
    key_env: str = setting(
        "Environment variable holding the API key (never the key itself); sent as a header to the "
        "API's origin only."
    )
    identifier: str = setting("The pre-annotation identifier: names the logs and the montages.")
    root: str = setting(
        "The input folder, relative to the repository root (data/figure8/input, tracked by DVC)."
    )
    raw_dir: str = setting(
        "The raw frames' folder inside root (natural sort order is frame order)."
    )
    logs_dir: str = setting(
        "The folder inside root holding {identifier}_montage_maker_log.json and "
        "{identifier}_overlapping_chopper_log.json."
    )
    raw_extensions: list[str] = setting("File extensions of raw frames.")
    max_report_bytes: int = setting("Cap on the report in bytes, enforced during the transfer.")

    def __post_init__(self) -> None:
        where = "sources.figure8.fetch"
        positive(where, job_id=self.job_id, max_report_bytes=self.max_report_bytes)
        parts = urlsplit(self.api)
        if parts.query or parts.fragment or parts.username or not parts.netloc:
            raise ConfigError(f"{where}.api must be scheme://host[:port][/path], not {self.api!r}")
        # The key goes to this origin: https only (loopback aside), checked before it is read.
        parse_origins([self.origin], f"{where}.api", secret=True)
        self.api = self.api.rstrip("/")
        if self.report_type.value not in ANNOTATED_REPORTS:
            raise ConfigError(
                f"{where}.report_type {self.report_type.value!r} holds no annotation per "
                f"image; use one of {', '.join(ANNOTATED_REPORTS)}"
            )
        if not self.identifier.strip() or "/" in self.identifier:
            raise ConfigError(f"{where}.identifier must be the pre-annotation identifier")
        for key in ("raw_dir", "logs_dir"):
            value = getattr(self, key)
            if not value or Path(value).is_absolute() or ".." in Path(value).parts:
                raise ConfigError(f"{where}.{key} must be a folder inside root, not {value!r}")
        exts = sorted({e.strip().lower() for e in self.raw_extensions})
        if not exts or any(len(e) < 2 or not e.startswith(".") for e in exts):
            raise ConfigError(f"{where}.raw_extensions must list extensions like .tif")
        self.raw_extensions = exts

    @property
    def origin(self) -> str:
        """Return the API's origin (scheme://host[:port]), where the key may go."""
        parts = urlsplit(self.api)
        return f"{parts.scheme}://{parts.netloc}"

    def log_name(self, kind: str) -> str:
        """Return a pre-annotation log's file name (`montage_maker` or `overlapping_chopper`)."""
        return f"{self.identifier}_{kind}_log.json"


@dataclass
class Figure8Frames:
    """extract-frames@figure8: how annotations are read and matched to raw frames."""

    mode: FramesMode = setting(
        "chop_raw: raw frames cut to the annotated positions (a movie per montage); recombine: "
        "positions stitched into full frames (a movie per part)."
    )
    colours: dict[str, int] = setting(
        '"#rrggbb": label, for annotations drawn in colours; empty: the label is the red channel '
        "(as the original)."
    )

    def __post_init__(self) -> None:
        for key, value in self.colours.items():
            rgb(key)
            if value < 1:
                raise ConfigError(f"sources.figure8.frames.colours[{key!r}] must be a label >= 1")


def rgb(text: str) -> tuple[int, int, int]:
    """Return `#rrggbb` as (r, g, b)."""
    value = text.strip().lower()
    if len(value) != 7 or value[0] != "#" or any(c not in "0123456789abcdef" for c in value[1:]):
        raise ConfigError(f"sources.figure8.frames.colours: {text!r} is not #rrggbb")
    if value == "#000000":
        raise ConfigError("sources.figure8.frames.colours: #000000 is the background")
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)


class Figure8SplitBy(Enum):
    """What groups movies into near copies for the splits."""

    # One field of view: its montage parts are consecutive frames, so a part's last frame
    # and the next part's first are near copies (the gates find them when split apart).
    position = "position"
    movie = "movie"  # one montage (a position's part): finer, leaks at part boundaries


@dataclass
class Figure8Clean:
    """clean-annotations@figure8 (scikit-image 0.26 `max_size`: at most, inclusive)."""

    hole_max: int = setting(
        "Background regions of at most this many pixels are filled (inclusive: 63 reproduces the "
        "original's area_threshold=64)."
    )
    object_max: int = setting(
        "Objects (touching cells count as one) of at most this many pixels are removed (inclusive: "
        "9 reproduces the original's min_size=10)."
    )
    connectivity: int = setting("Neighbours: 1 (4-way) or 2 (8-way).")
    split_by: Figure8SplitBy = setting(
        "Split group: position (a field of view, all its montage parts) or movie (one montage; "
        "required with frames.mode: recombine)."
    )

    def __post_init__(self) -> None:
        non_negative("sources.figure8.clean", hole_max=self.hole_max, object_max=self.object_max)
        if self.connectivity not in (1, 2):
            raise ConfigError("sources.figure8.clean.connectivity must be 1 (4-way) or 2 (8-way)")


@dataclass
class Figure8Export:
    """export-npz@figure8: tiles and movies left out."""

    reshape_size: Optional[int] = setting(  # noqa: UP045 - OmegaConf needs typing.Optional
        "Cut each movie into square tiles of this size, the last flush with the far edge (null: "
        "whole frames)."
    )
    samples_to_drop: list[str] = setting("Positions (x_00_y_01) or movie ids left out of the npz.")

    def __post_init__(self) -> None:
        if self.reshape_size is not None:
            positive("sources.figure8.export", reshape_size=self.reshape_size)


@dataclass
class Figure8Conf(SourceConf):
    """conf/source/figure8.yaml."""

    classes: list[str] = setting("The one class of the labelled objects (e.g. cell).")
    fetch: Figure8Fetch = MISSING
    frames: Figure8Frames = MISSING
    clean: Figure8Clean = MISSING
    export: Figure8Export = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.classes) != 1:
            raise ConfigError(
                "sources.figure8.classes must name the one class of the labelled objects "
                f"(e.g. [cell]), not {self.classes}"
            )
        if self.exports:
            raise ConfigError(
                "sources.figure8.exports must be []: label movies have no folder layout "
                "(export-npz writes DeepCell's npz)"
            )
        mode = getattr(self.frames.mode, "value", self.frames.mode)
        split_by = getattr(self.clean.split_by, "value", self.clean.split_by)
        # A name that can be no position and no movie of this job is refuted by the conf alone.
        movie = re.compile(
            rf"x_\d+_y_\d+|{re.escape(self.fetch.identifier)}_(x_\d+_y_\d+_)?part_\d+"
        )
        odd = [n for n in self.export.samples_to_drop if not movie.fullmatch(n)]
        if odd:
            raise ConfigError(
                f"sources.figure8.export.samples_to_drop: {odd} name no position (x_00_y_01) "
                f"and no movie ({self.fetch.identifier}_x_00_y_01_part_0, or "
                f"{self.fetch.identifier}_part_0 with frames.mode: recombine)"
            )
        if mode == "recombine" and split_by == "position":
            raise ConfigError(
                "sources.figure8.clean.split_by: position with frames.mode: recombine would put "
                "the whole job in one split (recombine stitches every position into one field); "
                "use split_by: movie (one split per montage part)"
            )
