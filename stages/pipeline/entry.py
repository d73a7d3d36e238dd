"""The thin part every stage entry shares: argv paths, typed settings, errors and exit codes."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages import sources
from stages.core.config import GROUPS, SourceConf, typed
from stages.core.errors import StageError
from stages.core.metrics import headline, write_json, write_plot
from stages.core.store import Store
from stages.pipeline.params import load_params, source_params
from stages.pipeline.restore import (
    failed_copy_path,
    forget_failed,
    remember,
    restore_after_failure,
)

if TYPE_CHECKING:
    from stages.families import Inputs

log = logging.getLogger("stages")
# The small files a stage writes (metrics, plots, report), copied into DVC's cache when it
# succeeds so a later failure can put them back (stages.pipeline.restore.remember).
OUTPUT_FILES: list[Path] = []
# Each entry's stage family, as its metrics and reports are named.
FAMILIES = {
    "stages.fetch": "fetch",
    "stages.extract_frames": "frames",
    "stages.clean_annotations": "clean",
    "stages.export_npz": "export",
    "stages.import_media": "import",
    "stages.labels": "labels",
}


def setup_logging() -> None:
    """Log to stderr, one line per event."""
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def run_main(main: Callable[[list[str] | None], int], *, restore: bool = True) -> None:
    """Run an entry point; user errors print one clear line and exit non-zero, and a stage
    DVC runs that fails puts its last build's outputs back (stages.pipeline.restore)."""
    setup_logging()
    code = 1
    try:
        code = main(None)
    except SystemExit as exc:  # argparse: --help, or a usage error
        code = exc.code if isinstance(exc.code, int) else 1
        raise
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; finished work is kept: re-run to resume", file=sys.stderr)
        code = 130
    finally:
        if restore and code != 0:  # a crash too: DVC deleted the outputs before the run
            restore_after_failure()
        elif restore:
            forget_failed()
            remember(OUTPUT_FILES)
    sys.exit(code)


@dataclass
class StageRun:
    """Parsed paths plus the typed settings a stage entry needs."""

    args: argparse.Namespace
    params: dict
    source: sources.Source
    cfg: SourceConf
    family: str  # the stage family, as metrics name it: fetch, frames, clean, export, ...

    def section(self, name: str) -> Any:
        """Return a shared section (fetch, store, clean, export) as its schema's dataclass."""
        return typed(GROUPS[name], self.params.get(name), "params.yaml", name)

    def readable_after_failure(self, path: Path) -> str:
        """Return where this run's version of a small output can be read if the stage fails:
        under DVC, the last build goes back in its place and this run's moves aside."""
        if os.environ.get("DVC_STAGE"):
            return failed_copy_path(Path(path).as_posix()).as_posix()
        return Path(path).as_posix()

    def executor(self):
        """Start the executor this run asked for (DSREPO_EXECUTOR; never params.yaml)."""
        from stages.pipeline.executors import load_conf, open_executor

        return open_executor(load_conf())

    @contextlib.contextmanager
    def inputs(self) -> Iterator[Inputs]:
        """Yield what the source's stage-family implementation gets, its executor running
        until the block ends."""
        from stages.families import Inputs

        with self.executor() as ex:
            yield Inputs(
                source=self.source,
                cfg=self.cfg,
                store=Store(self.args.inp),
                out_dir=self.args.out,
                shard_bytes=self.section("store").shard_bytes,
                executor=ex,
                split=self.section("split"),
            )

    def finish(self, metrics: dict, per_split: dict[str, dict[str, int]] | None = None) -> None:
        """Write the stage's report (all it counted, where argv names a --report), its
        headline metrics, and per-class plot data (per split and class with --splits-plot)."""
        if self.args.report:
            write_json(self.args.report, metrics)
        names = list(metrics["classes"])
        write_json(self.args.metrics, headline(self.family, self.args.source, metrics, names))
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
    ap.add_argument("--report", type=Path, help="everything the stage counted (JSON)")
    for flag, help_ in (extra or {}).items():
        ap.add_argument(flag, type=Path, help=help_)
    args = ap.parse_args(argv)
    extras = [getattr(args, flag.lstrip("-").replace("-", "_")) for flag in extra or {}]
    OUTPUT_FILES.extend(p for p in [args.metrics, args.plot, args.report, *extras] if p)
    params = load_params()
    source = sources.load(args.source)
    where = f"sources.{args.source}"
    cfg = typed(source.schema, source_params(params, args.source), "params.yaml", where)
    if clear and args.out.exists():
        shutil.rmtree(args.out)  # DVC does this too; never mix two runs' files
    return StageRun(args, params, source, cfg, FAMILIES[prog])
