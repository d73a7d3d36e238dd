"""fetch stage: plan a source's items, download them, pack them into the item store."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from stages.core.config import FetchConf, SourceConf, StoreConf
from stages.core.errors import TransientFailures
from stages.core.files import atomic_write
from stages.core.metrics import class_counts, status_summary
from stages.core.store import MANIFEST, STATUSES, Row, write_store
from stages.net.credentials import Credentials
from stages.net.download import Downloader
from stages.net.sharing import CacheUsers
from stages.pipeline.entry import run_main, start
from stages.sources import Context, Plan, Source

log = logging.getLogger("stages.fetch")


def fetch(
    source: Source,
    cfg: SourceConf,
    fetch_cfg: FetchConf,
    store_cfg: StoreConf,
    out_dir: Path,
    cache_dir: Path | None = None,
) -> tuple[list[Row], dict]:
    """Plan, download and pack one source; return the rows and the metrics."""
    creds = Credentials(source.credentials(cfg))
    workers = fetch_cfg.source_workers.get(source.name, fetch_cfg.workers)
    fetch_cfg = dataclasses.replace(fetch_cfg, workers=workers)
    dl = Downloader(
        fetch_cfg,
        cache_dir,
        ledger_name=f"ledger-{source.name}",
        credentials=creds,
        throttled=source.throttled,
    )
    # Held from planning to packing: no concurrent run deletes an object this one will read.
    users = CacheUsers(dl.root)
    try:
        plan = plan_and_download(source, cfg, dl)
        if out_dir.exists():
            shutil.rmtree(out_dir)  # DVC removes outputs too; never mix two runs' files
        names = plan.classes if plan.classes is not None else source.classes(cfg)
        rows = write_store(
            out_dir,
            plan.rows,
            lambda r: dl.object_path(r.sha256),
            store_cfg.shard_bytes,
            classes=names,
            rank=source.rank(cfg),
        )
        for rel, data in sorted(plan.files.items()):
            write_beside(out_dir, rel, data)
        transient = any(r.status == "failed" for r in rows)
        if not fetch_cfg.keep_cache and (fetch_cfg.allow_transient_failures or not transient):
            # Packed and verified (write_store checks each payload's sha256): the shards, then
            # DVC's cache, hold the bytes. A run killed before this point, or ending with
            # failures to retry (DVC keeps none of its output), keeps every download.
            users.release(dl.object_path(r.sha256) for r in rows if r.status == "ok")
    finally:
        users.close()
    metrics = {
        **status_summary(rows),
        "classes": class_counts(rows, names),
        # ok / permanently gone (missing, corrupt) / transient-failed, per class.
        "availability": {status: class_counts(rows, names, status) for status in STATUSES},
        "selection": plan.stats,
    }
    return rows, metrics


def plan_and_download(source: Source, cfg: SourceConf, dl: Downloader) -> Plan:
    """Plan a source's items and download the pending ones; record the outcomes on the rows."""
    try:
        ctx = Context(downloader=dl, source_name=source.name)
        plan = source.plan(cfg, ctx)
        pending = [r for r in plan.rows if r.status == "pending"]
        results = source.download(cfg, pending, ctx)
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
    return plan


def write_beside(out_dir: Path, rel: str, data: bytes) -> None:
    """Write a source's metadata file into the store directory (never outside it)."""
    path = (out_dir / rel).resolve()
    if not path.is_relative_to(out_dir.resolve()) or rel.startswith("shards/") or rel == MANIFEST:
        raise ValueError(f"a source's file {rel!r} would leave or overwrite the store")
    atomic_write(path, data)


def main(argv: list[str] | None = None) -> int:
    """Run the fetch stage for one source."""
    # The output is replaced only once planning and downloads are done.
    run = start(argv, "stages.fetch", __doc__, has_input=False, clear=False)
    args, fetch_cfg = run.args, run.section("fetch")
    rows, metrics = fetch(run.source, run.cfg, fetch_cfg, run.section("store"), args.out)
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
    if transient and not fetch_cfg.allow_transient_failures:
        raise TransientFailures(
            f"{transient} item(s) failed transiently (see {args.metrics}); "
            "re-run `dvc repro` to resume: finished downloads are kept"
        )
    return 0


if __name__ == "__main__":
    run_main(main)
