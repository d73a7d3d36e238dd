"""The settings of the Tator source: the schema of conf/source/tator.yaml and what its
modules share (imported by them, never the package's __init__: no import cycle)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, ClassVar, Optional

from omegaconf import MISSING

from stages.core.config import NoSettings, SourceConf, positive, setting
from stages.core.errors import ConfigError
from stages.core.origins import parse_origins

if TYPE_CHECKING:
    pass


SUMMARY = "tator/summary.json"  # fetch's counts beside its store, for clean's metrics
# How Tator's views answer a throttled request: a 400 (DRF's Throttled through their handler).
THROTTLED = r"Request was throttled\.(?: Expected available in (\d+(?:\.\d+)?) second)?"


class IfMissing(Enum):
    """What to do when media named in conf are not in the project."""

    error = "error"
    warn = "warn"


@dataclass
class TatorMedia:
    """Which media: every filter given must hold (all empty: every media of the project)."""

    names: list[str] = setting("Exact media names (empty: no filter by name).")
    section: Optional[str] = setting(  # noqa: UP045 - OmegaConf needs typing.Optional
        "A section (folder) name (null: no filter by section)."
    )
    attributes: list[str] = setting(
        "Media attribute filters, `Name::value` (checked here too: Tator ignores undeclared ones)."
    )
    if_missing: IfMissing = setting(
        "error or warn: media listed in `names` but absent from the project."
    )


@dataclass
class TatorFetch:
    """What fetch@tator reads: the server, the project, what to select, limits."""

    host: str = setting(
        "scheme://host[:port] of the Tator server: https only (loopback aside); the token is sent "
        "there only."
    )
    project: int = setting("Id of the Tator project (from its URL).")
    token_env: str = setting("Environment variable holding the API token (never the token itself).")
    media: TatorMedia = MISSING
    localization_types: list[str] = setting(
        "Localization type names or ids (empty: every type; only box types give boxes, the others "
        "are counted)."
    )
    versions: list[int] = setting("Annotation version ids (empty: every version).")
    class_attribute: str = setting(
        "The attribute holding a box's class (a track's, for its boxes without one)."
    )
    unknown_class: Optional[str] = setting(  # noqa: UP045
        "Class of a box with no class attribute (null: such boxes are dropped)."
    )
    page_size: int = setting("Objects per list request (paged by id; Tator has no cap).")
    media_per_query: int = setting("Media ids per localization or state list request.")
    max_response_bytes: int = setting("Cap on one API response, in bytes, enforced while reading.")

    def __post_init__(self) -> None:
        where = "sources.tator.fetch"
        positive(
            where,
            project=self.project,
            page_size=self.page_size,
            media_per_query=self.media_per_query,
            max_response_bytes=self.max_response_bytes,
        )
        # The token goes to this host: https only (loopback aside), checked before it is read.
        parse_origins([self.host], f"{where}.host", secret=True)
        self.host = self.host.rstrip("/")
        for spec in self.media.attributes:
            name, sep, value = spec.partition("::")
            if not sep or not name or "," in spec:
                raise ConfigError(
                    f"{where}.media.attributes: {spec!r} is not Name::value (without commas: "
                    "Tator joins filters with them)"
                )
        if not self.class_attribute:
            raise ConfigError(f"{where}.class_attribute is empty")
        if self.unknown_class is not None and not self.unknown_class.strip():
            raise ConfigError(f"{where}.unknown_class is blank: name a class, or null to drop")


@dataclass
class TatorConf(SourceConf):
    """conf/source/tator.yaml."""

    allow_no_classes: ClassVar[bool] = True  # empty: discovered from the data, sorted

    classes: list[str] = setting(
        "Class names in id order: they also select (frames with no box of a listed class are not "
        "fetched; boxes of other classes are dropped by clean). Empty: discovered from the data, in"
        " sorted order, and recorded in the manifest and metrics."
    )
    fetch: TatorFetch = MISSING
    clean: NoSettings = MISSING
    export: NoSettings = MISSING
