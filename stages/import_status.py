"""Print an import job and its shards: as recorded by import@<source>, and as the target
holds them now (`python -m stages.import_status videodir`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow.parquet as pq

from stages import sources
from stages.core.config import GROUPS, typed
from stages.core.errors import StoreError
from stages.import_media import JOB, RECORD, make_target, shard_status
from stages.pipeline.entry import run_main
from stages.pipeline.params import load_params, source_params


def status_lines(record_dir: Path, target) -> list[str]:
    """Return the job's lines: the recorded status, then each shard's status on the target now."""
    try:
        job = json.loads((record_dir / JOB).read_text(encoding="utf-8"))
        rows = pq.read_table(record_dir / RECORD).to_pylist()
    except (OSError, ValueError) as exc:
        raise StoreError(f"{record_dir}: no import record ({exc}); run `dvc repro` first") from None
    have = target.existing() if target is not None else {}
    lines = [
        f"job {job['job_id']} ({job['target']}): {job['item_count']} files, "
        f"{len(job['shards'])} shards, recorded {job['status']}"
    ]
    for shard in job["shards"]:
        mine = [r for r in rows if r["shard_id"] == shard["shard_id"]]
        now = shard_status(["present" if r["sha256"] in have else "missing" for r in mine])
        held = sum(r["sha256"] in have for r in mine)
        lines.append(
            f"  shard {shard['shard_id']}: {shard['item_count']} files, recorded "
            f"{shard['status']}, on the target now {now} ({held}/{len(mine)})"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print one source's import job."""
    ap = argparse.ArgumentParser(prog="python -m stages.import_status", description=__doc__)
    ap.add_argument("source")
    ap.add_argument("--record", type=Path, help="the record folder (default data/<source>/import)")
    args = ap.parse_args(argv)
    source = sources.load(args.source)
    params = load_params()
    cfg = typed(source.schema, source_params(params, args.source), "params.yaml")
    retry = typed(GROUPS["fetch"], params.get("fetch"), "params.yaml", "fetch")
    target = make_target(cfg.import_to, retry)
    try:
        print("\n".join(status_lines(args.record or Path("data", args.source, "import"), target)))
    finally:
        target.close()
    return 0


if __name__ == "__main__":
    run_main(main)
