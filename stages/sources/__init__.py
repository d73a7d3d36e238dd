"""Sources: one package per source, all behind the `Source` base class.

Adding a source means adding `stages/sources/<name>/` (a module-level `SOURCE`, an instance
of a `Source` subclass) and `conf/source/<name>.yaml`; nothing else changes. The schema of
the conf file is the source's `schema`, a `SourceConf` subclass whose `fetch` (and, where the
source has settings for them, `frames`, `clean`, `export`) sections are read by those stages
only, so dvc.yaml can make each stage depend on its own part. A source plans and downloads
its items; for the stages after fetch it names its implementations of the stage families
(`extractor()`, `cleaner()`, `exporter()`: stages.families), the shared ones by default.
"""

from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

from stages.core.config import SourceConf
from stages.core.errors import ConfigError
from stages.core.store import Row, Store, item_rank

if TYPE_CHECKING:  # imported where used: a stage depends only on the code it runs
    from stages.core.config import FetchConf
    from stages.core.executor import Executor
    from stages.families import Cleaner, Exporter, Extractor
    from stages.net.batches import WorkerSpec
    from stages.net.credentials import Credential, Credentials
    from stages.net.download import Downloader
    from stages.net.ledger import Result
    from stages.net.retry import Policy

T = TypeVar("T")


class Context:
    """What a source may use while planning and downloading, and nothing else.

    - transfers: `fetch(url)` and `fetch_all(urls)` (verified, retried, recorded), `forget(url)`;
    - outcomes kept in the source's ledger for items that come by other means (yt-dlp sections,
      archive members): `standing(urls)` (what a re-run reuses), `record(*results)`;
    - the retry policy: `policy` (judge an answer, the attempt deadline) and `retry(attempt)`
      (its loop, on the downloader's clock);
    - the object cache: `object_path(sha256)`, `import_file(path)`, `adopt(path)`,
      `work_path()`, `cache_dir`; and `listings`, small JSON documents by key (get/put);
    - the run: `executor`, `worker_spec()` (how its Dask workers rebuild this context, with
      `Context.on_worker`), `credentials` and `fetch_conf` (for a source's own API client).
    """

    def __init__(self, downloader: Downloader, source_name: str):
        from stages.net.listings import Listings

        self._dl = downloader
        self.source_name = source_name  # what rows record as their source
        self.listings = Listings(downloader.cache)

    @classmethod
    def on_worker(cls, spec: WorkerSpec, source_name: str) -> Context:
        """Return the context of a task on a Dask worker (no ledger: the driver records)."""
        from stages.net.batches import worker_downloader

        return cls(worker_downloader(spec), source_name)

    def fetch(
        self,
        url: str,
        kind: str | None = None,
        *,
        refresh: bool = False,
        max_bytes: int | None = None,
        deadline: float | None = None,
    ) -> Result:
        """Download one URL (a recorded outcome that stands is reused unless `refresh`)."""
        return self._dl.fetch(url, kind, refresh=refresh, max_bytes=max_bytes, deadline=deadline)

    def fetch_all(
        self,
        urls: Iterable[str],
        *,
        desc: str,
        max_bytes: int | None = None,
        kind: str | None = None,
    ) -> dict[str, Result]:
        """Download many URLs on the run's executor; return results by URL."""
        return self._dl.fetch_all(urls, desc=desc, max_bytes=max_bytes, kind=kind)

    def forget(self, url: str) -> None:
        """Drop a URL's recorded outcome, so the next run downloads it again."""
        self._dl.forget(url)

    def standing(self, urls: Iterable[str]) -> dict[str, Result]:
        """Return the recorded outcomes that stand for these URLs (the rest need fetching)."""
        return self._dl.standing(urls)

    def record(self, *results: Result) -> None:
        """Record outcomes of items fetched by other means, in one transaction."""
        self._dl.record(*results)

    @property
    def policy(self) -> Policy:
        """Return the run's retry policy."""
        return self._dl.policy

    def retry(self, attempt: Callable[[], T]) -> T:
        """Run an attempt under the retry policy, on the downloader's clock."""
        return self._dl.policy.run(attempt, sleep=self._dl.sleep, clock=self._dl.clock)

    @property
    def cache_dir(self) -> Path:
        """Return the download cache's directory (shared by a run's Dask workers)."""
        return self._dl.cache.root

    def object_path(self, sha256: str) -> Path:
        """Return where content with this hash lives in the cache."""
        return self._dl.cache.object_path(sha256)

    def import_file(self, src: str | Path) -> tuple[str, int]:
        """Put a local file into the object cache under its hash; return (sha256, size)."""
        return self._dl.cache.import_file(src)

    def adopt(self, path: Path, sha256: str | None = None) -> tuple[str, int]:
        """Move a finished file into the object cache; return (sha256, size)."""
        return self._dl.cache.adopt(path, sha256)

    def work_path(self) -> Path:
        """Return a fresh scratch path in the cache (removed if its run is killed)."""
        return self._dl.cache.work_path()

    @property
    def executor(self) -> Executor:
        """Return the run's executor (`run_batches`: work here or as tasks on its workers)."""
        return self._dl.executor

    def worker_spec(self) -> WorkerSpec:
        """Return how a Dask worker rebuilds this context's downloader (no secrets)."""
        return self._dl.worker_spec()

    @property
    def credentials(self) -> Credentials:
        """Return the source's origin-scoped credentials (for its own API client)."""
        return self._dl.creds

    @property
    def fetch_conf(self) -> FetchConf:
        """Return the run's downloader settings (timeouts, retries, sizes)."""
        return self._dl.cfg


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
    # Whether items are videos (clips: frames, and layouts of clips). Said here only: compose
    # derives the stage lists of dvc.yaml from it.
    video: ClassVar[bool] = False
    # Whether an extract-frames stage (the source's extractor()) runs between fetch and clean.
    has_frames: ClassVar[bool] = False
    # Whether fetch reads local files, from data/<name>/input/ (which DVC tracks as its input).
    local_input: ClassVar[bool] = False
    # A regex that marks a 400 answer's body as the server's throttle (retried after the
    # seconds in its first group, else backoff), for servers that do not say 429.
    throttled: ClassVar[str | None] = None
    # What the plots stage draws from the clean store (a PNG and a series), or None: no stage.
    plots: ClassVar[PlotSpec | None] = None
    # The item metadata naming a group of near copies, which share a split (stages.core.splits).
    split_key: ClassVar[str] = ""

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
        return ctx.fetch_all([r.url for r in rows], desc=f"fetch@{self.name}")

    def split_group(self, cfg: SourceConf, row: Row) -> tuple[str, str | None]:
        """Return an item's group for the splits, and the split its data names, if any
        (hook: default, the `split_key` metadata; no split of its own)."""
        from stages.core.splits import group_key

        if not self.split_key:
            raise NotImplementedError(f"{self.name}: no split group is defined")
        return group_key(row.meta, self.split_key, row.item_id, self.name), None

    def classes(self, cfg: SourceConf) -> list[str]:
        """Return the configured class names in id order (empty: discovered by fetch)."""
        return list(cfg.classes)

    def names(self, cfg: SourceConf, store: Store) -> list[str]:
        """Return the class names in id order as the input store recorded them."""
        return store.classes or self.classes(cfg)

    def extractor(self) -> Extractor:
        """Return what makes the extract-frames store (with `has_frames`)."""
        raise NotImplementedError(f"{self.name} has no extract-frames stage")

    def cleaner(self) -> Cleaner:
        """Return what makes the clean-annotations store (default: boxed images)."""
        from stages.families.clean import ImageCleaner

        return ImageCleaner()

    def exporter(self) -> Exporter:
        """Return what writes the export-npz files (default: boxed images)."""
        from stages.families.export import ImageExporter

        return ImageExporter()

    def draw(self, cfg: SourceConf, store: Store) -> tuple[bytes, list[dict]]:
        """Return the plots stage's PNG and series rows for the clean store (hook)."""
        raise NotImplementedError(f"{self.name} has no plots")


class VideoSource(Source):
    """A source of video clips: decoded into frames, cleaned as frames, exported as clips.

    Its schema extends `VideoSourceConf` (a `frames:` section that extract-frames reads)."""

    video = True
    has_frames = True

    def extractor(self) -> Extractor:
        """Return the clip decoder (hook: a subclass may set per-clip settings)."""
        from stages.families.frames import VideoExtractor

        return VideoExtractor()

    def cleaner(self) -> Cleaner:
        """Return the cleaner of video frames (whole clips kept or dropped)."""
        from stages.families.clean import VideoCleaner

        return VideoCleaner()

    def exporter(self) -> Exporter:
        """Return the exporter of clips of evenly spaced frames."""
        from stages.families.export import ClipExporter

        return ClipExporter()


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
