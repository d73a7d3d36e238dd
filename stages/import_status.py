"""Print an import job and its shards: as recorded by import@<source>, and as the target
holds them now (`python -m stages.import_status videodir`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stages import sources, targets
from stages.core.config import GROUPS, typed
from stages.pipeline.entry import run_main
from stages.pipeline.params import load_params, source_params
from stages.targets.record import read_record, shard_status


def status_lines(job: dict, rows: list[dict], have: dict[str, str]) -> list[str]:
    """Return the job's lines: the recorded status, then each shard's status on the target
    now (`have`: what the target holds, by sha256)."""
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
    job, rows = read_record(args.record or Path("data", args.source, "import"))
    target = targets.load(cfg.import_to, retry)
    try:
        have = target.existing()
    finally:
        target.close()
    print("\n".join(status_lines(job, rows, have)))
    return 0


if __name__ == "__main__":
    run_main(main)
