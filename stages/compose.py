"""Compose the Hydra config tree in conf/ into params.yaml (the `compose` stage)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stages.pipeline.compose import compose_text, write_params
from stages.pipeline.entry import run_main
from stages.pipeline.explain import explain


def main(argv: list[str] | None = None) -> int:
    """Compose conf/ into params.yaml, check that it is current, or explain the settings."""
    ap = argparse.ArgumentParser(prog="python -m stages.compose", description=__doc__)
    ap.add_argument("params", nargs="?", default="params.yaml")
    ap.add_argument("--conf", default="conf")
    ap.add_argument("--check", action="store_true", help="exit 1 if params.yaml is stale")
    ap.add_argument("--force", action="store_true", help="overwrite a hand-edited params.yaml")
    ap.add_argument(
        "--explain",
        nargs="?",
        const="",
        metavar="PREFIX",
        help="print every setting under PREFIX (e.g. sources.lila.fetch, split; none: all) with "
        "its type, composed value and explanation, and write nothing",
    )
    args = ap.parse_args(argv)
    if args.explain is not None:
        sys.stdout.write(explain(Path(args.conf), args.explain))
        return 0
    params = Path(args.params)
    if args.check:
        current = params.read_text(encoding="utf-8") if params.exists() else ""
        if current != compose_text(Path(args.conf)):
            print(f"{params} is stale: run `dvc repro compose`", file=sys.stderr)
            return 1
        return 0
    changed = write_params(Path(args.conf), params, force=args.force)
    print(f"{params}: {'updated' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    run_main(main, restore=False)  # params.yaml persists: DVC never deletes it
