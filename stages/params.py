"""Read params.yaml for a stage entry, refusing stale settings."""

from __future__ import annotations

from pathlib import Path

import yaml

from stages.compose import compose, render
from stages.errors import ConfigError


def load_params(params_path: str | Path = "params.yaml", conf_dir: str | Path = "conf") -> dict:
    """Return params.yaml as data, after checking it matches a fresh compose of conf/."""
    params_path, conf_dir = Path(params_path), Path(conf_dir)
    if not params_path.is_file():
        raise ConfigError(f"{params_path} not found: run `dvc repro compose` first")
    text = params_path.read_text(encoding="utf-8")
    # A stage must never build from settings that conf/ no longer says.
    if conf_dir.is_dir() and text != render(compose(conf_dir)):
        raise ConfigError(
            f"{params_path} is stale or hand-edited relative to {conf_dir}/: "
            "run `dvc repro` (the compose stage rewrites it) instead of running stages directly"
        )
    return yaml.safe_load(text)


def source_params(params: dict, source: str) -> dict:
    """Return one enabled source's section."""
    sources = params.get("sources") or {}
    if source not in sources:
        known = ", ".join(sorted(sources)) or "none"
        raise ConfigError(f"source {source!r} is not enabled in conf/source/ (enabled: {known})")
    return sources[source]
