"""LILA camera traps: a datasets index CSV, COCO Camera Traps metadata, images on three clouds.

This module is what every stage imports (settings schema, hooks); what only fetch needs lives
in `fetch.py`, `index.py` and `rows.py`, imported when fetch runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Optional

from omegaconf import MISSING

from stages.core.config import NoSettings, SourceConf, non_negative, positive, setting
from stages.core.errors import ConfigError
from stages.core.origins import parse_origins
from stages.core.selection import check_caps, ranker
from stages.sources import Context, Plan, Source

if TYPE_CHECKING:
    from stages.core.store import Row
    from stages.net.credentials import Credential


class Cloud(Enum):
    """Which mirror's URLs to use from the index."""

    gcp = "gcp"
    aws = "aws"
    azure = "azure"


@dataclass
class LilaFetch:
    """What fetch@lila reads: where the data is, what to select, limits, the SAS token."""

    index_url: str = setting(
        "URL of LILA's datasets index CSV (real use: "
        "https://lila.science/wp-content/uploads/2023/06/lila_camera_trap_datasets.csv)."
    )
    dataset: str = setting("The dataset's `name` in the index (e.g. NACTI).")
    cloud: Cloud = setting(
        "Which mirror's metadata_url_* and image_base_url_* columns to use: gcp, aws or azure."
    )
    cap: Optional[int] = setting(  # noqa: UP045 - OmegaConf needs typing.Optional
        "Default cap on the images picked for each class (null: all), by a seeded hash of their "
        "ids. An image picked for one class keeps all its labels, so more images than the cap "
        "may carry a class (reports/fetch.json: selection.picked and selection.selected)."
    )
    caps: dict[str, int] = setting("Per-class caps over `cap`, by the names used in `classes`.")
    seed: int = setting(
        "Seeds the hash that ranks images inside a class (which images the caps keep)."
    )
    byte_budget: Optional[int] = setting(  # noqa: UP045
        "Stop selecting when the estimated bytes exceed this (null: no budget)."
    )
    est_bytes_per_image: int = setting(
        "Estimated bytes per image for the budget: sizes are unknown before download (NACTI: "
        "~400000)."
    )
    max_index_bytes: int = setting("Cap on the datasets index CSV download, in bytes.")
    max_metadata_bytes: int = setting("Cap on the metadata download and on its JSON, in bytes.")
    metadata_timeout: float = setting("Seconds: deadline of one metadata download attempt.")
    max_json_value_bytes: int = setting(
        "Cap on one JSON value outside the images and annotations arrays, in bytes."
    )
    sas_token_env: Optional[str] = setting(  # noqa: UP045
        "Name of an environment variable holding an Azure SAS token (never the token itself); null:"
        " none."
    )
    sas_token_origins: list[str] = setting(
        "The only origins the SAS token is ever sent to (https only)."
    )

    def __post_init__(self) -> None:
        where = "sources.lila.fetch"
        non_negative(where, cap=self.cap, byte_budget=self.byte_budget)
        non_negative(f"{where}.caps", **self.caps)
        positive(
            where,
            est_bytes_per_image=self.est_bytes_per_image,
            max_index_bytes=self.max_index_bytes,
            max_metadata_bytes=self.max_metadata_bytes,
            max_json_value_bytes=self.max_json_value_bytes,
            metadata_timeout=self.metadata_timeout,
        )
        # Checked at compose, before any secret is read: where the token may ever go.
        parse_origins(self.sas_token_origins, f"{where}.sas_token_origins", secret=True)
        if self.sas_token_env and not self.sas_token_origins:
            raise ConfigError(
                f"{where}.sas_token_origins is empty: a token needs the origins it may be sent "
                f"to (e.g. https://lilawildlife.blob.core.windows.net for {self.sas_token_env})"
            )


class SplitBy(Enum):
    """What groups camera-trap images into near copies for the splits."""

    location = "location"  # a camera site: every image it ever took
    sequence = "sequence"  # one burst (COCO Camera Traps' seq_id): finer, more leakage


@dataclass
class LilaClean:
    """What clean-annotations@lila reads of this source's settings."""

    split_by: SplitBy = setting(
        "What near copies share a split: location (a camera site) or sequence (one burst, seq_id)."
    )


@dataclass
class LilaConf(SourceConf):
    """conf/source/lila.yaml."""

    classes: list[str] = setting(
        "Classes by common name or scientific name; `empty` is a class like any other. The order "
        "fixes the class ids used by clean-annotations and export-npz."
    )
    fetch: LilaFetch = MISSING
    clean: LilaClean = MISSING
    export: NoSettings = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        check_caps(self.fetch.caps, self.classes)


class Lila(Source):
    """LILA BC camera-trap datasets (e.g. NACTI) from the GCP, AWS or Azure mirror."""

    name = "lila"
    split_key = "location"  # a camera-trap site, or a burst (clean.split_by: sequence)
    schema = LilaConf

    def split_group(self, cfg: LilaConf, row: Row) -> tuple[str, str | None]:
        """Return the image's location, or its sequence when conf says so."""
        from stages.core.splits import group_key

        by = cfg.clean.split_by
        key = "seq_id" if by is SplitBy.sequence else self.split_key
        return group_key(row.meta, key, row.item_id, self.name), None

    def rank(self, cfg: LilaConf) -> Callable[[Row], bytes]:
        """Return the selection's rank of an image (it ranks image ids)."""
        rank = ranker(cfg.fetch.seed)
        return lambda row: rank(row.source_id)

    def credentials(self, cfg: LilaConf) -> list[Credential]:
        """Return the Azure SAS token, if configured, scoped to its origins."""
        from stages.net.credentials import from_env

        f = cfg.fetch
        if not f.sas_token_env:
            return []
        where = "sources.lila.fetch.sas_token_env"
        return [from_env(f.sas_token_env, f.sas_token_origins, where)]

    def plan(self, cfg: LilaConf, ctx: Context) -> Plan:
        """Read the index and metadata, select images, and return rows to download."""
        from stages.sources.lila.fetch import plan

        return plan(cfg, ctx)


SOURCE = Lila()
