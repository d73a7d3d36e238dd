"""Import targets: where import@<source> sends a video folder's files (a labelling platform,
or a plain folder), behind one small interface.

A target registers a camera (a section, a folder), lists what it already holds by content
hash (its own records, compared here: never trusted to filter), takes one file, and reads
back the labels annotators put on the files it holds. The importer owns everything else:
which files, in which job and shard, retries, the record (`record.py`).

Targets are loaded by name, like sources: `stages/targets/<kind>.py` (the `import_to.target`
value) defines `build(cfg, retry)`, imported only when that target is used.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from stages.core.errors import ConfigError

if TYPE_CHECKING:
    from stages.core.config import FetchConf, ImportConf


@dataclass(frozen=True)
class Upload:
    """One file to send: its identity, where it came from, and what the target should know."""

    sha256: str
    name: str  # the file name at its first path (what a person would recognise)
    size: int
    camera: str
    timestamp: str  # ISO 8601, UTC
    location: tuple[float, float] | None
    settings: dict  # the camera's settings (per-camera values over the global ones)
    open: Callable[[], BinaryIO]  # the bytes, read from the store


@dataclass(frozen=True)
class TargetLabel:
    """One label on a file the target holds: a box on a frame, or a state over frames."""

    media: str  # the target's id of the file
    label: str
    frame: int | None = None
    frame_end: int | None = None  # inclusive; None: one frame (or the whole file)
    box: tuple[float, float, float, float] | None = None  # x, y, w, h (normalised)


class TargetBusy(Exception):
    """A target's transient refusal (429, 5xx, a reset connection): the importer retries the
    file with backoff, honouring the target's Retry-After when it gave one."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class Target(ABC):
    """Where imported files go."""

    @abstractmethod
    def register(self, camera: str, settings: dict) -> str:
        """Make sure the camera's place exists (a section, a folder); return its id."""

    @abstractmethod
    def existing(self) -> dict[str, str]:
        """Return what the target holds: content sha256 -> its id for the file there."""

    @abstractmethod
    def upload(self, item: Upload, place: str) -> str:
        """Send one file to a registered place; return the target's id for it (raise
        TargetBusy for a transient refusal, OSError for a failure of this file)."""

    @abstractmethod
    def labels(self, ids: list[str]) -> tuple[list[TargetLabel], dict[str, int]]:
        """Return the labels on these files (each with a class), and counts of what was
        skipped (e.g. shapes without a class), by reason."""

    def close(self) -> None:  # noqa: B027 - most targets hold nothing to release
        """Release connections and temporary files."""


def gone_message(gone: list) -> str:
    """Explain imported files missing from the target."""
    return (
        f"{len(gone)} imported file(s) are not on the target any more (e.g. {gone[0]}): "
        "deleted there, or the target is another server; re-import them with "
        "`dvc repro -f import@<source>`"
    )


def load(cfg: ImportConf, retry: FetchConf) -> Target:
    """Return the configured target (`retry`: the fetch section's timeouts and retries)."""
    kind = cfg.target.value
    try:
        module = importlib.import_module(f"stages.targets.{kind}")
    except ModuleNotFoundError as exc:
        if exc.name != f"stages.targets.{kind}":
            raise
        raise ConfigError(f"import_to.target {kind!r}: no stages/targets/{kind}.py") from None
    return module.build(cfg, retry)
