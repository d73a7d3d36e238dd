"""Sources: one module per source, all behind one small interface.

A source module defines:
- ``VIDEO: bool`` -- whether its items need the extract-frames stage;
- ``plan(cfg: dict, ctx: Context) -> Plan`` -- list what to download (rows in ``pending`` state);
- ``classes(cfg: dict) -> list[str]`` -- class names in id order.
Adding a source means adding ``stages/sources/<name>.py`` and ``conf/source/<name>.yaml``.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from types import ModuleType

from stages.download import Downloader
from stages.errors import ConfigError
from stages.store import Row


@dataclass
class Context:
    """What a source may use while planning."""

    downloader: Downloader
    source: str


@dataclass
class Plan:
    """Rows to fetch plus selection statistics for the metrics."""

    rows: list[Row]
    stats: dict = field(default_factory=dict)


def load(name: str) -> ModuleType:
    """Import a source module by name."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigError(f"invalid source name {name!r}")
    try:
        return importlib.import_module(f"stages.sources.{name}")
    except ModuleNotFoundError as exc:
        raise ConfigError(f"no source module stages/sources/{name}.py") from exc
