"""The thin part every stage entry shares: argv paths, its params section, outputs."""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from stages import sources
from stages.metrics import write_json, write_plot
from stages.params import load_params, source_params


@dataclass
class StageRun:
    """Parsed paths plus the settings a stage entry needs."""

    args: argparse.Namespace
    params: dict
    source_cfg: dict
    module: ModuleType
    classes: list[str]

    def section(self, name: str) -> dict:
        """Return a top-level params section (empty if absent)."""
        return self.params.get(name) or {}

    def finish(self, metrics: dict) -> None:
        """Write the stage's metrics JSON and per-class plot data."""
        write_json(self.args.metrics, metrics)
        write_plot(self.args.plot, metrics["classes"])


def start(
    argv: list[str] | None, prog: str, doc: str, *, has_input: bool = True, clear: bool = True
) -> StageRun:
    """Parse `source [input] output metrics plot`, load params, empty the output dir."""
    ap = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc)
    ap.add_argument("source")
    if has_input:
        ap.add_argument("inp", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("metrics", type=Path)
    ap.add_argument("plot", type=Path)
    args = ap.parse_args(argv)
    params = load_params()
    cfg = source_params(params, args.source)
    module = sources.load(args.source)
    if clear and args.out.exists():
        shutil.rmtree(args.out)  # DVC does this too; never mix two runs' files
    return StageRun(args, params, cfg, module, module.classes(cfg))
