"""fetch stage: plan a source's items, download them, pack them into the item store."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from stages import sources
from stages.cli import run_main
from stages.download import Config, Downloader
from stages.entry import start
from stages.errors import StageError
from stages.metrics import class_counts, status_summary
from stages.store import Row, write_store

log = logging.getLogger("stages.fetch")


def fetch(
    source: str,
    src_cfg: dict,
    fetch_cfg: dict,
    store_cfg: dict,
    out_dir: Path,
    cache_dir: Path | None = None,
) -> tuple[list[Row], dict]:
    """Plan, download and pack one source; return the rows and the metrics."""
    module = sources.load(source)
    cfg = Config.from_params(fetch_cfg)
    options = module.request_options(src_cfg) if hasattr(module, "request_options") else {}
    dl = Downloader(cfg, cache_dir, ledger_name=f"ledger-{source}", **options)
    try:
        plan = module.plan(src_cfg, sources.Context(downloader=dl, source=source))
        pending = [r for r in plan.rows if r.status == "pending"]
        results = dl.fetch_all([r.url for r in pending], desc=f"fetch@{source}")
    finally:
        dl.close()
    for row in pending:
        res = results[row.url]
        row.status, row.reason, row.sha256, row.bytes = (
            res.status,
            res.reason,
            res.sha256,
            res.bytes,
        )
    if out_dir.exists():
        shutil.rmtree(out_dir)  # DVC removes outputs too; never mix two runs' files
    rows = write_store(
        out_dir,
        plan.rows,
        lambda r: dl.object_path(r.sha256),
        int(store_cfg.get("shard_bytes") or 256 << 20),
    )
    if not cfg.keep_cache:
        for row in rows:
            if row.status == "ok":
                dl.object_path(row.sha256).unlink(missing_ok=True)
    names = module.classes(src_cfg)
    metrics = {
        **status_summary(rows),
        "classes": class_counts(rows, names),
        "selection": plan.stats,
    }
    return rows, metrics


def main(argv: list[str] | None = None) -> int:
    """Run the fetch stage for one source."""
    # The output is replaced only once planning and downloads are done.
    run = start(argv, "stages.fetch", __doc__, has_input=False, clear=False)
    args = run.args
    rows, metrics = fetch(
        args.source, run.source_cfg, run.section("fetch"), run.section("store"), args.out
    )
    run.finish(metrics)
    log.info(
        "fetch@%s: %d ok, %d failed, %d missing, %d corrupt, %.1f MB",
        args.source,
        metrics["ok"],
        metrics["failed"],
        metrics["missing"],
        metrics["corrupt"],
        metrics["bytes"] / 1e6,
    )
    transient = metrics["failed"]
    if transient and not Config.from_params(run.section("fetch")).allow_transient_failures:
        raise StageError(
            f"{transient} item(s) failed transiently (see {args.metrics}); "
            "re-run `dvc repro` to resume: finished downloads are kept"
        )
    return 0


if __name__ == "__main__":
    run_main(main)
