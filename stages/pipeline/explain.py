"""Explain the settings: each key under a prefix with its type, composed value and meaning.

The explanations live in the schemas (`setting(doc)`), not only in conf/'s comments, which
`dvc exp run -S` may drop when it rewrites a conf file.
"""

from __future__ import annotations

import dataclasses
import difflib
import textwrap
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from stages import sources
from stages.core.config import GROUPS, Setting, inner, settings
from stages.core.errors import ConfigError
from stages.pipeline.compose import hydra_data, source_files

UNSET = object()


def schemas(conf_dir: Path) -> list[tuple[str, type]]:
    """Return (key prefix, schema) for every shared group, then every source in conf/source/."""
    out = list(GROUPS.items())
    return out + [
        (f"sources.{p.stem}", sources.load(p.stem).schema) for p in source_files(conf_dir)
    ]


def type_name(kind: Any) -> str:
    """Return a setting's type in the words conf/ uses."""
    if inner(kind) is not kind:
        return f"{type_name(inner(kind))} or null"
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        if dataclasses.is_dataclass(args[1]):  # a section per key: its keys are listed apart
            names = ", ".join(f.name for f in dataclasses.fields(args[1]))
            return f"mapping of {type_name(args[0])} to {{{names}}}"
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    if isinstance(kind, type) and issubclass(kind, Enum):
        return f"one of {', '.join(kind.__members__)}"
    return "any" if kind is Any else getattr(kind, "__name__", str(kind))


def value_at(data: Any, parts: list[str]) -> Any:
    """Return the composed value at a key path; a `*` part maps each key to its value."""
    if not parts:
        return data
    if not isinstance(data, dict):
        return UNSET
    head, rest = parts[0], parts[1:]
    if head == "*":
        found = {k: value_at(v, rest) for k, v in data.items()}
        return {k: v for k, v in found.items() if v is not UNSET}
    return value_at(data[head], rest) if head in data else UNSET


def matches(key: str, prefix: str) -> bool:
    """Tell whether a setting's key lies under a prefix (`*` stands for any one key)."""
    want, have = prefix.split("."), key.split(".")
    return len(want) <= len(have) and all(h in ("*", w) for w, h in zip(want, have, strict=False))


def block(setting: Setting, value: Any) -> str:
    """Return one setting's block: key, type and value, then its explanation, indented."""
    shown = "(not set)" if value is UNSET else flow(value)
    head = f"{setting.key}: {type_name(setting.kind)} = {shown}"
    body = textwrap.fill(
        setting.doc or "(no explanation)",
        width=96,
        initial_indent="    ",
        subsequent_indent="    ",
        break_long_words=False,  # URLs and paths stay whole
        break_on_hyphens=False,
    )
    return f"{head}\n{body}\n"


def flow(value: Any) -> str:
    """Return a value on one line, as YAML writes it."""
    text = yaml.safe_dump(
        value, default_flow_style=True, allow_unicode=True, sort_keys=False, width=10**6
    )
    return text.removesuffix("...\n").strip()  # a scalar document ends with `...`


def explain(conf_dir: Path, prefix: str = "") -> str:
    """Return the blocks of every setting under `prefix` (all of them when empty), in the
    order the schemas declare them; refuse a prefix that names no setting."""
    data = hydra_data(conf_dir)
    found, known = [], set()
    for root, schema in schemas(conf_dir):
        for s in settings(schema):
            key = Setting(f"{root}.{s.key}", s.kind, s.doc)
            parts = key.key.split(".")
            known.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            if not prefix or matches(key.key, prefix):
                found.append(block(key, value_at(data, parts)))
    if not found:
        close = difflib.get_close_matches(prefix, sorted(known), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else "; try `fetch` or `sources`"
        raise ConfigError(f"no setting is named or starts with {prefix!r}{hint}")
    return "\n".join(found)
