"""Stage families: what extract-frames, clean-annotations and export-npz do, one interface each.

A source names its implementations (`Source.extractor()`, `cleaner()`, `exporter()`); a stage
entry reads its params, builds the `Inputs`, asks the source for its implementation and runs
it. The shared implementations are `frames.VideoExtractor` (decoded clips), `clean.ImageCleaner`
and `clean.VideoCleaner`, `export.ImageExporter` and `export.ClipExporter`; a source whose
items are neither boxed images nor clips (Figure Eight's montages and label movies) has its own
in its package. Each works on batches (a shard's items, a clip's frames, a movie) that run as
tasks of the stage's one executor, never asking where those run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from stages.core.config import CleanConf, ExportConf, GatesConf, SourceConf, SplitConf
from stages.core.executor import Executor
from stages.core.gates import Gate
from stages.core.store import Row, Store


class SourceHooks(Protocol):
    """What the stage families ask of a source (stages.sources.Source)."""

    name: str

    def rank(self, cfg: SourceConf) -> Callable[[Row], bytes]:
        """Return the key that orders a class's items in its shards."""

    def names(self, cfg: SourceConf, store: Store) -> list[str]:
        """Return the class names in id order as the input store recorded them."""

    def split_group(self, cfg: SourceConf, row: Row) -> tuple[str, str | None]:
        """Return an item's group for the splits, and the split its data names, if any."""


@dataclass
class Inputs:
    """What every stage family's implementation gets: the source and its settings, the input
    store, where to write, the shard size, the executor and the splits."""

    source: SourceHooks
    cfg: SourceConf
    store: Store
    out_dir: Path
    shard_bytes: int
    executor: Executor
    split: SplitConf

    def names(self) -> list[str]:
        """Return the class names in id order, as the input store recorded them."""
        return self.source.names(self.cfg, self.store)


@dataclass
class Cleaned:
    """What a cleaner hands its stage: the metrics, what the gates found (None: gates off),
    the rows the gallery samples (a clip by its first frame) and how to read their payloads."""

    metrics: dict
    names: list[str]
    gate: Gate | None
    gallery: list[Row]
    read: Callable[[Row], bytes]


class Extractor(ABC):
    """extract-frames: a store of frames made from the fetched items."""

    @abstractmethod
    def run(self, inputs: Inputs) -> dict:
        """Write the frames store under inputs.out_dir; return its metrics."""


class Cleaner(ABC):
    """clean-annotations: a store of usable items, each in its group's split."""

    @abstractmethod
    def run(self, inputs: Inputs, clean: CleanConf, gates: GatesConf) -> Cleaned:
        """Write the clean store under inputs.out_dir; return what the stage reports."""


class Exporter(ABC):
    """export-npz: training arrays, one set per split."""

    @abstractmethod
    def run(self, inputs: Inputs, export: ExportConf) -> dict:
        """Write the npz files under inputs.out_dir/<split>/; return the metrics."""
