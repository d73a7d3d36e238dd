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

from stages.core.config import NoSettings, SourceConf, non_negative, positive
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

    index_url: str = MISSING
    dataset: str = MISSING
    cloud: Cloud = MISSING
    cap: Optional[int] = MISSING  # noqa: UP045 - OmegaConf needs typing.Optional
    caps: dict[str, int] = MISSING
    seed: int = MISSING
    byte_budget: Optional[int] = MISSING  # noqa: UP045
    est_bytes_per_image: int = MISSING
    max_index_bytes: int = MISSING
    max_metadata_bytes: int = MISSING
    metadata_timeout: float = MISSING
    max_json_value_bytes: int = MISSING
    sas_token_env: Optional[str] = MISSING  # noqa: UP045
    sas_token_origins: list[str] = MISSING

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


class SplitBy(Enum):
    """What groups camera-trap images into near copies for the splits."""

    location = "location"  # a camera site: every image it ever took
    sequence = "sequence"  # one burst (COCO Camera Traps' seq_id): finer, more leakage


@dataclass
class LilaClean:
    """What clean-annotations@lila reads of this source's settings."""

    split_by: SplitBy = MISSING


@dataclass
class LilaConf(SourceConf):
    """conf/source/lila.yaml."""

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
