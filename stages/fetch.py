"""fetch stage: plan a source's items, download them, pack them into the item store."""

from __future__ import annotations

import dataclasses
import functools
import logging
import shutil
from pathlib import Path

from stages.core.config import FetchConf, SourceConf, StoreConf
from stages.core.errors import TransientFailures
from stages.core.executor import Executor
from stages.core.files import atomic_write
from stages.core.metrics import class_counts, status_summary
from stages.core.store import (
    MANIFEST,
    STATUSES,
    HashingReader,
    PayloadMismatch,
    Row,
    Segment,
    write_store,
)
from stages.net.credentials import Credentials
from stages.net.download import Downloader
from stages.net.ledger import Result
from stages.net.sharing import CacheUsers
from stages.pipeline.entry import run_main, start
from stages.pipeline.previous import previous_payloads
from stages.sources import Context, Plan, Source

log = logging.getLogger("stages.fetch")


def fetch(
    source: Source,
    cfg: SourceConf,
    fetch_cfg: FetchConf,
    store_cfg: StoreConf,
    out_dir: Path,
    cache_dir: Path | None = None,
    *,
    executor: Executor,
) -> tuple[list[Row], dict]:
    """Plan, download and pack one source; return the rows and the metrics.

    Downloads and shards are tasks of `executor`.
    """
    creds = Credentials(source.credentials(cfg))
    workers = fetch_cfg.source_workers.get(source.name, fetch_cfg.workers)
    fetch_cfg = dataclasses.replace(fetch_cfg, workers=workers)
    dl = Downloader(
        fetch_cfg,
        cache_dir,
        ledger_name=f"ledger-{source.name}",
        credentials=creds,
        throttled=source.throttled,
        executor=executor,
        worker_credentials=functools.partial(source_credentials, source.name, cfg),
    )
    # Held from planning to packing: no concurrent run deletes an object this one will read.
    users = CacheUsers(dl.root)
    try:
        executor.check_visible(dl.root, Path(out_dir).absolute().parent)
        plan = plan_and_download(source, cfg, dl, out_dir)
        if out_dir.exists():
            shutil.rmtree(out_dir)  # DVC removes outputs too; never mix two runs' files
        names = plan.classes if plan.classes is not None else source.classes(cfg)
        try:
            rows = write_store(
                out_dir,
                plan.rows,
                lambda r: dl.cache.object_path(r.sha256),
                store_cfg.shard_bytes,
                classes=names,
                rank=source.rank(cfg),
                executor=executor,
            )
        except PayloadMismatch as exc:
            # A damaged cached object: dropped, so the next run downloads it again.
            Path(exc.path).unlink(missing_ok=True)
            raise
        for rel, data in sorted(plan.files.items()):
            write_beside(out_dir, rel, data)
        transient = any(r.status == "failed" for r in rows)
        if not fetch_cfg.keep_cache and (fetch_cfg.allow_transient_failures or not transient):
            # Packed and verified (write_store checks each payload's sha256): the shards, then
            # DVC's cache, hold the bytes. A run killed before this point, or ending with
            # failures to retry (DVC keeps none of its output), keeps every download.
            users.release(r.sha256 for r in rows if r.status == "ok")
        else:
            users.keep = {r.sha256 for r in rows if r.status == "ok"}
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


def source_credentials(name: str, cfg: SourceConf) -> Credentials:
    """Return a source's credentials from this process's environment (on a Dask worker)."""
    from stages.sources import load

    return Credentials(load(name).credentials(cfg))


def reuse_previous(dl: Downloader, rows: list[Row], previous: dict) -> int:
    """Put back into the download cache the payloads of the previous build of this output
    (DVC's cache holds them), each checked against its sha256; return how many."""
    if not previous:
        return 0
    standing = dl.standing(r.url for r in rows)
    reused = []
    for row in rows:
        found = previous.get(row.url)
        if found is None or row.url in standing:
            continue
        sha256, path, offset, size = found
        tmp = dl.cache.work_path()
        try:
            with open(path, "rb") as shard, open(tmp, "wb") as dst:
                src = HashingReader(Segment(shard, offset, size))
                shutil.copyfileobj(src, dst)
                copied = dst.tell()
            if copied == size and src.hexdigest() == sha256:
                dl.cache.adopt(tmp, sha256)
                reused.append(Result(row.url, "ok", sha256=sha256, bytes=size))
        except OSError as exc:  # then it is downloaded as if there were no previous build
            log.debug("cannot reuse %s from %s: %s", row.url, path, exc.strerror)
        finally:
            tmp.unlink(missing_ok=True)
    dl.record(*reused)
    return len(reused)


def plan_and_download(
    source: Source, cfg: SourceConf, dl: Downloader, previous: Path | None = None
) -> Plan:
    """Plan a source's items and download the pending ones; record the outcomes on the rows.

    Items the previous build of the output dir `previous` packed are taken from DVC's cache.
    """
    try:
        ctx = Context(dl, source.name)
        plan = source.plan(cfg, ctx)
        pending = [r for r in plan.rows if r.status == "pending"]
        if previous is not None and not dl.cfg.refresh:
            earlier = previous_payloads(previous, f"fetch@{source.name}")
            reused = reuse_previous(dl, pending, earlier)
            if reused:
                log.info("fetch@%s: %d item(s) taken from the previous build", source.name, reused)
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
    with run.executor() as ex:
        rows, metrics = fetch(
            run.source, run.cfg, fetch_cfg, run.section("store"), args.out, executor=ex
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
    if transient and not fetch_cfg.allow_transient_failures:
        raise TransientFailures(
            f"{transient} item(s) failed transiently (reasons: "
            f"{run.readable_after_failure(args.report or args.metrics)}); "
            "re-run `dvc repro` to resume: finished downloads are kept"
        )
    return 0


if __name__ == "__main__":
    run_main(main)
