"""Sources: one package per source, all behind the `Source` base class.

Adding a source means adding `stages/sources/<name>/` (a module-level `SOURCE`, an instance
of a `Source` subclass) and `conf/source/<name>.yaml`; nothing else changes. The schema of
the conf file is the source's `schema`, a `SourceConf` subclass whose `fetch` (and, where the
source has settings for them, `frames`, `clean`, `export`) sections are read by those stages
only, so dvc.yaml can make each stage depend on its own part.
"""

from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from stages.core.config import CleanConf, ExportConf, FramesConf, SourceConf, SplitConf
from stages.core.errors import ConfigError
from stages.core.store import Row, Store, item_rank

if TYPE_CHECKING:  # only fetch imports the network code: other stages do not depend on it
    from stages.core.executor import Executor
    from stages.net.credentials import Credential
    from stages.net.download import Downloader
    from stages.net.ledger import Result


@dataclass
class Context:
    """What a source may use while planning."""

    downloader: Downloader
    source_name: str  # what rows record as their source


@dataclass
class Plan:
    """Rows to fetch (status `pending`) plus selection statistics for the metrics.

    `files` are metadata the source keeps beside the store (relative path -> bytes, e.g. the
    annotations as the remote served them); `classes` are the class names in id order when
    the source discovered them from the data (None: the configured ones).
    """

    rows: list[Row]
    stats: dict = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    classes: list[str] | None = None


class Source(ABC):
    """One source: its settings schema, how it plans downloads, and its optional hooks."""

    name: ClassVar[str]
    schema: ClassVar[type[SourceConf]]
    # Whether items are videos that the extract-frames stage turns into frames. Said here
    # only: compose derives the stage lists of dvc.yaml from it.
    video: ClassVar[bool] = False
    # Whether fetch reads local files, from data/<name>/input/ (which DVC tracks as its input).
    local_input: ClassVar[bool] = False
    # A regex that marks a 400 answer's body as the server's throttle (retried after the
    # seconds in its first group, else backoff), for servers that do not say 429.
    throttled: ClassVar[str | None] = None
    # Stage families that run this source's own code (its hooks below) instead of the shared
    # code: "extract-frames" for frames that are not decoded video (montage tiles),
    # "clean-annotations" and "export-npz" for items that are not boxed images.
    own_stages: ClassVar[frozenset[str]] = frozenset()
    # What the plots stage draws from the clean store (a PNG and a series), or None: no stage.
    plots: ClassVar[PlotSpec | None] = None
    # The item metadata naming a group of near copies, which share a split (stages.core.splits).
    split_key: ClassVar[str] = ""

    @property
    def has_frames(self) -> bool:
        """Return whether an extract-frames stage runs between fetch and clean."""
        return self.video or "extract-frames" in self.own_stages

    @abstractmethod
    def plan(self, cfg: SourceConf, ctx: Context) -> Plan:
        """Return the rows to download (from the source's index, metadata or API)."""

    def rank(self, cfg: SourceConf) -> Callable[[Row], bytes]:
        """Return the key that orders a class's items in its shards: the selection's seeded
        rank, so raising a cap appends to the class's last shard (hook: default, the id)."""
        return item_rank

    def credentials(self, cfg: SourceConf) -> list[Credential]:
        """Return the secrets this source needs, each scoped to its origins (hook)."""
        return []

    def download(self, cfg: SourceConf, rows: list[Row], ctx: Context) -> dict[str, Result]:
        """Download the pending rows; return results by URL (hook: default, the downloader).

        A source whose items do not come over plain HTTP (yt-dlp sections) records them in
        the same ledger and object cache, so resuming and failure classes work the same.
        """
        return ctx.downloader.fetch_all([r.url for r in rows], desc=f"fetch@{self.name}")

    def frames(self, cfg: SourceConf, row: Row) -> FramesConf:
        """Return the extract-frames settings for one clip (hook: per-camera overrides)."""
        return cfg.frames

    def clean_row(self, cfg: SourceConf, row: Row, counts: Counter) -> Row | None:
        """Apply source-specific cleaning to a row that passed the shared checks (hook).

        Return the row (possibly changed) or None to drop it; count what was done in `counts`.
        """
        return row

    def split_group(self, cfg: SourceConf, row: Row) -> tuple[str, str | None]:
        """Return an item's group for the splits, and the split its data names, if any
        (hook: default, the `split_key` metadata; no split of its own)."""
        from stages.core.splits import group_key

        if not self.split_key:
            raise NotImplementedError(f"{self.name}: no split group is defined")
        return group_key(row.meta, self.split_key, row.item_id, self.name), None

    def gated(self, row: Row) -> bool:
        """Return whether the quality gates hash an item of the clean store (hook: all; a
        source whose items include label images checks its pictures only)."""
        return True

    def clean_stats(self, cfg: SourceConf, store: Store) -> dict:
        """Return source-specific counts for clean's metrics, from its input store (hook)."""
        return {}

    def classes(self, cfg: SourceConf) -> list[str]:
        """Return the configured class names in id order (empty: discovered by fetch)."""
        return list(cfg.classes)

    def names(self, cfg: SourceConf, store: Store) -> list[str]:
        """Return the class names in id order as the input store recorded them."""
        return store.classes or self.classes(cfg)

    # Hooks of the stages in `own_stages`: each gets the stage's input store and output dir,
    # writes a store (or, for export-npz, npz files) there and returns its metrics.

    def extract(
        self,
        cfg: SourceConf,
        store: Store,
        out_dir: Path,
        shard_bytes: int,
        executor: Executor | None = None,
    ) -> tuple[list[Row], dict]:
        """Write the extract-frames store, its per-item work on `executor`; return its rows
        and metrics (own stage hook)."""
        raise NotImplementedError(f"{self.name} has no extract-frames stage of its own")

    def clean_store(
        self,
        cfg: SourceConf,
        clean: CleanConf,
        split: SplitConf,
        store: Store,
        out_dir: Path,
        shard_bytes: int,
        executor: Executor | None = None,
    ) -> tuple[list[Row], dict]:
        """Write the clean-annotations store, each item in its group's split, its per-item
        work on `executor`; return its rows and metrics (own stage hook)."""
        raise NotImplementedError(f"{self.name} has no clean-annotations stage of its own")

    def export_store(
        self, cfg: SourceConf, export: ExportConf, splits: list[str], store: Store, out_dir: Path
    ) -> dict:
        """Write the export-npz files under out_dir/<split>/; return the metrics (own stage
        hook)."""
        raise NotImplementedError(f"{self.name} has no export-npz stage of its own")

    def draw(self, cfg: SourceConf, store: Store) -> tuple[bytes, list[dict]]:
        """Return the plots stage's PNG and series rows for the clean store (hook)."""
        raise NotImplementedError(f"{self.name} has no plots")


@dataclass(frozen=True)
class PlotSpec:
    """How DVC shows a source's series (a vega template and its fields) beside its picture."""

    template: str
    x: str
    y: str
    title: str


def load(name: str) -> Source:
    """Return the source registered under a name."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigError(f"invalid source name {name!r}")
    try:
        module = importlib.import_module(f"stages.sources.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"stages.sources.{name}":
            raise
        raise ConfigError(
            f"no source package stages/sources/{name}/ for conf/source/{name}.yaml"
        ) from None
    source = getattr(module, "SOURCE", None)
    if not isinstance(source, Source):
        raise ConfigError(f"stages/sources/{name}/ defines no SOURCE (a Source instance)")
    return source
