"""fetch@figure8: the job report, its annotation images, the raw frames and the logs."""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from stages.core.errors import MetadataError, StageError
from stages.core.parallel import default_workers, pmap
from stages.core.store import Row
from stages.sources import Context, Plan
from stages.sources.figure8.conf import Figure8Conf
from stages.sources.figure8.montage import natural_key, read_chopper_log, read_montage_log
from stages.sources.figure8.report import Report, broken_csvs, read_report

log = logging.getLogger("stages.sources.figure8")
# An uploaded montage's file name, as the montage maker wrote it (x, y padded or not).
MONTAGE_NAME = re.compile(r"(?P<id>.+)_x_(?P<x>\d+)_y_(?P<y>\d+)_montage_(?P<part>\d+)\.\w+")
LOGS = "json_logs"  # where the store keeps the pre-annotation logs


def report_url(cfg: Figure8Conf) -> str:
    """Return the report's URL (the key goes in a header, never in the URL)."""
    f = cfg.fetch
    return f"{f.api}/jobs/{f.job_id}.csv?type={quote(f.report_type.value)}"


def download_report(cfg: Figure8Conf, ctx: Context) -> Report:
    """Download the report afresh (it grows as judgments come in); return it and its CSV."""
    f = cfg.fetch
    url = report_url(cfg)
    res = ctx.fetch(url, refresh=True, max_bytes=f.max_report_bytes)
    if res.status != "ok":
        hint = {"missing": ": check fetch.job_id"}.get(res.status, "")
        raise StageError(
            f"the report of job {f.job_id} could not be downloaded ({res.status}: "
            f"{res.reason}){hint}"
        )
    path = ctx.object_path(res.sha256)
    try:
        return read_report(path, f.max_report_bytes, f.identifier)
    except MetadataError as exc:  # name the report, not its file in the download cache
        raise type(exc)(str(exc).replace(path.name, f"the report of job {f.job_id}")) from None


def montage_of(image_url: str, identifier: str, row: int) -> dict:
    """Return a montage's position and part from its image URL's file name."""
    name = PurePosixPath(unquote(urlsplit(image_url).path)).name
    found = MONTAGE_NAME.fullmatch(name)
    if found is None or found["id"] != identifier:
        raise MetadataError(
            f"report row {row}: image_url {image_url!r} is not a montage of {identifier!r} "
            f"({identifier}_x_<x>_y_<y>_montage_<part>.png)"
        )
    return {"x": int(found["x"]), "y": int(found["y"]), "part": int(found["part"])}


def montage_rows(cfg: Figure8Conf, report: Report, source: str) -> tuple[list[Row], int]:
    """Return one row per annotated montage position and part, and how many judgments were
    superseded: the last judgment in report order wins (the original overwrote earlier
    downloads), whatever spelling of the file name it came with."""
    ident = cfg.fetch.identifier
    latest: dict[tuple[int, int, int], Row] = {}
    superseded = 0
    for row in report.good:
        where = montage_of(row["image_url"], ident, row["_row"])
        key = (where["part"], where["x"], where["y"])
        superseded += key in latest
        latest[key] = Row(
            item_id=f"{ident}_x_{where['x']}_y_{where['y']}_montage_{where['part']}_annotation",
            source=source,
            source_id=row["image_url"],
            url=row["_annotation_url"],
            labels=list(cfg.classes),
            status="pending",
            meta={"role": "montage", **where, "ext": ".png"},
        )
    return [latest[k] for k in sorted(latest)], superseded


def raw_rows(cfg: Figure8Conf, ctx: Context) -> list[Row]:
    """Take the raw frames into the object cache; return one ok row per frame, in order."""
    f = cfg.fetch
    folder = Path(f.root) / f.raw_dir
    if not folder.is_dir():
        raise StageError(f"{folder} is not a folder: put the raw frames there (fetch.raw_dir)")
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in f.raw_extensions and p.is_file()),
        key=lambda p: natural_key(p.name),
    )
    if not files:
        raise StageError(f"{folder} holds no raw frames ({', '.join(f.raw_extensions)})")
    workers = min(4, default_workers())
    rows = []
    digests = pmap(lambda p: ctx.import_file(p), files, kind="thread", workers=workers)
    for frame, (path, (sha, size)) in enumerate(zip(files, digests, strict=True)):
        rel = f"{f.raw_dir}/{path.name}"
        rows.append(
            Row(
                item_id=f"raw/{frame:06d}",
                source=ctx.source_name,
                source_id=rel,
                url=f"file:{rel}",
                sha256=sha,
                bytes=size,
                status="ok",
                meta={"role": "raw", "frame": frame, "ext": path.suffix.lower()},
            )
        )
    return rows


def read_logs(cfg: Figure8Conf) -> dict[str, bytes]:
    """Check both pre-annotation logs; return them as files for the store."""
    f = cfg.fetch
    files, logs = {}, []
    for kind, reader in (
        ("montage_maker", read_montage_log),
        ("overlapping_chopper", read_chopper_log),
    ):
        path = Path(f.root) / f.logs_dir / f.log_name(kind)
        if not path.is_file():
            raise StageError(
                f"{path} not found: the pre-annotation step writes it (fetch.logs_dir)"
            )
        logs.append(reader(path))
        files[f"{LOGS}/{kind}.json"] = path.read_bytes()
    geometry, chopper = logs
    segments = (geometry.num_x_segments, geometry.num_y_segments)
    if segments != (chopper.num_x_segments, chopper.num_y_segments):
        raise MetadataError(
            f"the logs disagree: the montage maker had {segments[0]} x {segments[1]} positions, "
            f"the chopper {chopper.num_x_segments} x {chopper.num_y_segments}"
        )
    return files


def plan(cfg: Figure8Conf, ctx: Context) -> Plan:
    """Read the logs, the report and the raw frames; return the annotations to download."""
    f = cfg.fetch
    files = read_logs(cfg)  # a missing log fails before anything is downloaded
    report = download_report(cfg, ctx)
    rows, superseded = montage_rows(cfg, report, ctx.source_name)
    raws = raw_rows(cfg, ctx)
    full, reupload = broken_csvs(report)
    stem = f"job_{f.job_id}_{f.report_type.value}_report"
    files.update(
        {
            f"{stem}.csv": report.text.encode(),
            f"{stem}_broken_links.csv": full,
            f"job_{f.job_id}_reupload.csv": reupload,
        }
    )
    stats = {
        "report_rows": report.rows,
        "annotated_rows": len(report.good),
        "montages": len(rows),
        "broken_links": len(report.broken),
        "broken_links_cleared": report.cleared,
        "judgments_superseded": superseded,
        "rows_of_other_identifiers": report.other,
        "raw_frames": len(raws),
    }
    log.info(
        "figure8: job %d: %d report rows, %d montages, %d broken link(s), %d raw frames",
        f.job_id,
        report.rows,
        len(rows),
        len(report.broken),
        len(raws),
    )
    return Plan(rows=rows + raws, stats=stats, files=files)
