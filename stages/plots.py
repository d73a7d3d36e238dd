"""plots stage: pictures of a source's clean store (a PNG for `dvc plots`) and a series."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from stages import sources
from stages.core.config import typed
from stages.core.files import atomic_write
from stages.core.metrics import write_json
from stages.core.store import Store
from stages.pipeline.entry import run_main
from stages.pipeline.params import load_params, source_params

log = logging.getLogger("stages.plots")


def main(argv: list[str] | None = None) -> int:
    """Draw one source's clean store: its picture and its series."""
    ap = argparse.ArgumentParser(prog="python -m stages.plots", description=__doc__)
    ap.add_argument("source")
    ap.add_argument("inp", type=Path)
    ap.add_argument("picture", type=Path)
    ap.add_argument("series", type=Path)
    args = ap.parse_args(argv)
    source = sources.load(args.source)
    where = f"sources.{args.source}"
    cfg = typed(source.schema, source_params(load_params(), args.source), "params.yaml", where)
    png, rows = source.draw(cfg, Store(args.inp))
    atomic_write(args.picture, png)
    write_json(args.series, rows)
    log.info(
        "plots@%s: %s (%d bytes), %d series rows", args.source, args.picture, len(png), len(rows)
    )
    return 0


if __name__ == "__main__":
    run_main(main)
