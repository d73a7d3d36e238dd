"""The thin part every stage entry shares: argv paths, typed settings, errors and exit codes."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages import sources
from stages.core.config import GROUPS, SourceConf, typed
from stages.core.errors import StageError
from stages.core.metrics import write_json, write_plot
from stages.pipeline.params import load_params, source_params

log = logging.getLogger("stages")


def setup_logging() -> None:
    """Log to stderr, one line per event."""
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def run_main(main: Callable[[list[str] | None], int]) -> None:
    """Run an entry point; user errors print one clear line and exit non-zero."""
    setup_logging()
    try:
        code = main(None)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; finished work is kept: re-run to resume", file=sys.stderr)
        code = 130
    sys.exit(code)


@dataclass
class StageRun:
    """Parsed paths plus the typed settings a stage entry needs."""

    args: argparse.Namespace
    params: dict
    source: sources.Source
    cfg: SourceConf

    def section(self, name: str) -> Any:
        """Return a shared section (fetch, store, clean, export) as its schema's dataclass."""
        return typed(GROUPS[name], self.params.get(name), "params.yaml", name)

    def executor(self):
        """Start the executor this run asked for (DSREPO_EXECUTOR; never params.yaml)."""
        from stages.core.executor import load_conf, open_executor

        return open_executor(load_conf())

    def finish(self, metrics: dict, per_split: dict[str, dict[str, int]] | None = None) -> None:
        """Write the stage's metrics JSON and per-class plot data (and per split and class,
        where argv names a --splits-plot)."""
        write_json(self.args.metrics, metrics)
        write_plot(self.args.plot, metrics["classes"])
        if getattr(self.args, "splits_plot", None) and per_split is not None:
            write_plot(
                self.args.splits_plot,
                {f"{s}/{c}": n for s, counts in per_split.items() for c, n in counts.items()},
            )


def start(
    argv: list[str] | None,
    prog: str,
    doc: str,
    *,
    has_input: bool = True,
    clear: bool = True,
    extra: dict[str, str] | None = None,
) -> StageRun:
    """Parse `source [input] output metrics plot` (and `extra` optional output paths), load
    params, empty the output dir."""
    ap = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc)
    ap.add_argument("source")
    if has_input:
        ap.add_argument("inp", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("metrics", type=Path)
    ap.add_argument("plot", type=Path)
    for flag, help_ in (extra or {}).items():
        ap.add_argument(flag, type=Path, help=help_)
    args = ap.parse_args(argv)
    params = load_params()
    source = sources.load(args.source)
    where = f"sources.{args.source}"
    cfg = typed(source.schema, source_params(params, args.source), "params.yaml", where)
    if clear and args.out.exists():
        shutil.rmtree(args.out)  # DVC does this too; never mix two runs' files
    return StageRun(args, params, source, cfg)
