"""params.yaml: render it with digests, and read it back only if conf/ still says the same."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from stages.core.errors import ConfigError

HEADER = "# Generated from conf/ by `python -m stages.compose`; edit conf/, not this file.\n"
CONF_PREFIX = "# conf: "
DIGEST_PREFIX = "# digest: "


EXECUTOR_DIR = "executor"


def conf_digest(conf_dir: Path) -> str:
    """Return a digest of every YAML file under conf/ (names and bytes) but the executor's."""
    h = hashlib.sha256()
    root = Path(conf_dir)
    for path in sorted(root.rglob("*.yaml")):
        if path.relative_to(root).parts[0] == EXECUTOR_DIR:
            continue  # where a build runs never changes params.yaml (stages.core.executor)
        rel = path.relative_to(root).as_posix().encode()
        data = path.read_bytes()
        h.update(b"%d:%s%d:" % (len(rel), rel, len(data)))
        h.update(data)
    return h.hexdigest()


def header_value(text: str, prefix: str) -> str | None:
    """Return a header line's value from params.yaml text."""
    for line in text.splitlines()[:4]:
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    return None


def render(data: dict, conf: str) -> str:
    """Render params.yaml text with the conf/ digest and a body digest (detects hand edits)."""
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    digest = hashlib.sha256(body.encode()).hexdigest()
    return f"{HEADER}{CONF_PREFIX}{conf}\n{DIGEST_PREFIX}{digest}\n{body}"


def hand_edited(text: str) -> bool:
    """Tell whether params.yaml text no longer matches the digest it was written with."""
    want = header_value(text, DIGEST_PREFIX)
    if want is None:
        return True
    body = "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith("#"))
    return hashlib.sha256(body.encode()).hexdigest() != want


def load_params(params_path: str | Path = "params.yaml", conf_dir: str | Path = "conf") -> dict:
    """Return params.yaml as data, after checking it matches a fresh compose of conf/."""
    params_path, conf_dir = Path(params_path), Path(conf_dir)
    if not params_path.is_file():
        raise ConfigError(f"{params_path} not found: run `dvc repro compose` first")
    text = params_path.read_text(encoding="utf-8")
    # A stage must never build from settings that conf/ no longer says, or from a hand edit.
    stale = conf_dir.is_dir() and header_value(text, CONF_PREFIX) != conf_digest(conf_dir)
    if stale or hand_edited(text):
        raise ConfigError(
            f"{params_path} is stale or hand-edited relative to {conf_dir}/: "
            "run `dvc repro` (the compose stage rewrites it) instead of running stages directly"
        )
    return yaml.safe_load(text)


def source_params(params: dict, source: str) -> dict:
    """Return one enabled source's section."""
    enabled = params.get("sources") or {}
    if source not in enabled:
        known = ", ".join(sorted(enabled)) or "none"
        raise ConfigError(f"source {source!r} is not enabled in conf/source/ (enabled: {known})")
    return enabled[source]
