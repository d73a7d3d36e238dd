"""import stage: send a video source's fetched files to a target, as one job in shards.

Files are identified by content (sha256): a file the target already holds (found by that
hash, compared here) is not sent again, equal files under different names are one file, and
a run killed mid-upload resumes where it stopped. The import record (`record.parquet`, one
row per file: hash, path, camera, UTC timestamp, location, target id, job, shard, status)
and the job (`job.json`: shards with their files and status) are the stage's output.

Shards hold at most `import_to.shard_size` files in (timestamp, hash) order; their ids are
zero-padded numbers, so string order is numeric order (Camio's were not padded: "10" < "2").
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections import Counter
from pathlib import Path

from stages import targets
from stages.core.config import FetchConf, ImportConf
from stages.core.parallel import pmap, progress
from stages.core.store import Row, Store
from stages.net.retry import Policy, Transient
from stages.pipeline.entry import run_main, start
from stages.targets import Target, TargetBusy, Upload
from stages.targets.record import shard_status, write_record

log = logging.getLogger("stages.import_media")


def location(meta: dict) -> tuple[float, float] | None:
    """Return (lat, lng) from a regex's `lat` and `lng` groups, if it has them."""
    try:
        return float(meta["lat"]), float(meta["lng"])
    except (KeyError, TypeError, ValueError):
        return None


def plan_job(rows: list[Row], shard_size: int) -> tuple[str, list[list[Row]]]:
    """Return the job id (from the files' hashes) and the files split into shards."""
    rows = sorted(rows, key=lambda r: (r.meta["timestamp"], r.sha256))
    digest = hashlib.sha256("\n".join(sorted(r.sha256 for r in rows)).encode()).hexdigest()
    shards = [rows[i : i + shard_size] for i in range(0, len(rows), shard_size)]
    return f"job-{digest[:16]}", shards


def run_import(
    cfg: ImportConf, store: Store, target: Target, name: str, retry: FetchConf
) -> tuple[list[dict], dict, dict]:
    """Send every fetched file the target lacks; return the record rows, the job, metrics.

    A file the target refuses for now is retried by the policy the downloader's settings
    make (`retry`: `fetch.retries`, `backoff`, `backoff_max`, `retry_after_max`)."""
    policy = Policy.from_conf(retry)
    rows = [r for r in store.rows() if r.status == "ok" and r.sha256 and r.shard is not None]
    job_id, shards = plan_job(rows, cfg.shard_size)
    have = target.existing()
    places, refused = {}, {}
    for camera in sorted({r.meta["camera"] for r in rows}):  # serially: no racing creations
        try:
            places[camera] = target.register(camera, cfg.for_camera(camera))
        except OSError as exc:  # that camera's files fail; the others go on
            refused[camera] = f"camera not registered: {type(exc).__name__}: {exc.strerror or exc}"

    def upload(row: Row) -> tuple[str, str, str]:
        if row.sha256 in have:
            return "present", have[row.sha256], ""
        camera = row.meta["camera"]
        if camera in refused:
            return "failed", "", refused[camera]
        item = Upload(
            sha256=row.sha256,
            name=Path(row.meta["paths"][0]).name,
            size=row.bytes,
            camera=camera,
            timestamp=row.meta["timestamp"],
            location=location(row.meta),
            settings=cfg.for_camera(camera),
            open=lambda: store.open(row),
        )

        def attempt() -> str:
            try:
                return target.upload(item, places[camera])
            except TargetBusy as exc:
                raise Transient(exc.reason, exc.retry_after) from None

        try:
            return "sent", policy.run(attempt), ""
        except Transient as exc:
            return "failed", "", f"target busy after {exc.attempts} attempts: {exc.reason}"
        except OSError as exc:  # the target's disk or connection: this file's failure
            return "failed", "", f"{type(exc).__name__}: {exc.strerror or exc}"

    ordered = [r for shard in shards for r in shard]
    results = pmap(upload, ordered, kind="thread", workers=cfg.workers, window=4 * cfg.workers)
    bar = progress(total=len(ordered), desc=f"import@{name}", unit="file")
    outcome, sent, start = {}, 0, time.monotonic()
    for row, res in zip(ordered, results, strict=True):
        outcome[row.sha256] = res
        sent += row.bytes if res[0] == "sent" else 0
        bar.set_postfix_str(f"{sent / 1e6 / max(time.monotonic() - start, 1e-6):.1f} MB/s")
        bar.update()
    bar.close()
    record, job_shards, counts = [], [], Counter()
    for number, shard in enumerate(shards):
        shard_id = f"{number:04d}"
        statuses = []
        for r in shard:
            status, target_id, reason = outcome[r.sha256]
            statuses.append(status)
            counts[status] += 1
            status = "failed" if status == "failed" else "imported"
            lat_lng = location(r.meta) or (None, None)
            record.append(
                {
                    "sha256": r.sha256,
                    "path": r.meta["paths"][0],
                    "camera": r.meta["camera"],
                    "timestamp": r.meta["timestamp"],
                    "lat": lat_lng[0],
                    "lng": lat_lng[1],
                    "target_id": target_id,
                    "job_id": job_id,
                    "shard_id": shard_id,
                    "status": status,
                    "reason": reason,
                }
            )
        job_shards.append(
            {"shard_id": shard_id, "item_count": len(shard), "status": shard_status(statuses)}
        )
    failed = counts["failed"]
    job = {
        "job_id": job_id,
        "target": cfg.target.value,
        "item_count": len(record),
        "status": "complete" if not failed else "shards_failed",
        "shards": job_shards,
        "cameras": sorted({r["camera"] for r in record}),
        "earliest_date": min((r["timestamp"] for r in record), default=None),
        "latest_date": max((r["timestamp"] for r in record), default=None),
    }
    metrics = {
        "files": len(record),
        "sent": counts["sent"],
        "present": counts["present"],
        "failed": failed,
        "shards": len(job_shards),
        "shards_complete": sum(s["status"] == "complete" for s in job_shards),
        "job_complete": int(not failed),
        "bytes_sent": sum(r.bytes for r in rows if outcome[r.sha256][0] == "sent"),
        # For the per-class plot every stage writes: files per camera.
        "classes": dict(sorted(Counter(r["camera"] for r in record).items())),
    }
    return record, job, metrics


def main(argv: list[str] | None = None) -> int:
    """Run import@<source>."""
    run = start(argv, "stages.import_media", __doc__, clear=False)
    args = run.args
    cfg = run.cfg.import_to
    retry = run.section("fetch")  # tuning only: never a param of the stage
    target = targets.load(cfg, retry)
    try:
        record, job, metrics = run_import(cfg, Store(args.inp), target, args.source, retry)
    finally:
        target.close()
    if args.out.exists():
        shutil.rmtree(args.out)
    write_record(args.out, record, job)
    run.finish(metrics)
    log.info(
        "import@%s: %d files (%d sent, %d already there, %d failed) in %d shards of job %s",
        args.source,
        metrics["files"],
        metrics["sent"],
        metrics["present"],
        metrics["failed"],
        metrics["shards"],
        job["job_id"],
    )
    return 0 if not metrics["failed"] else 75


if __name__ == "__main__":
    run_main(main)
