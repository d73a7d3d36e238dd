"""A stage output's last build as dvc.lock records it, read from DVC's cache.

DVC deletes a stage's outputs before it runs the stage again, and fetch no longer keeps its
downloads (fetch.keep_cache), so the payloads of the previous build live only in DVC's cache.
Reading them from there lets a re-run (a raised cap, an added class) download only what is new.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pyarrow.parquet as pq

from stages.core.store import MANIFEST
from stages.pipeline.restore import locked_stages

log = logging.getLogger("stages.pipeline.previous")
FIRST = "%s: first build of %s (no earlier build in DVC's cache)"


def locked_dir_md5(root: Path, rel: str) -> str | None:
    """Return the `.dir` md5 dvc.lock records for an output directory, or None."""
    for outs in locked_stages(root).values():
        for out in outs:
            md5 = out.get("md5")
            if out["path"] == rel and isinstance(md5, str) and md5.endswith(".dir"):
                return md5
    return None


def previous_payloads(out_dir: Path, stage: str) -> dict[str, tuple[str, str, int, int]]:
    """Map URL -> (sha256, shard file in DVC's cache, offset, size) for the payloads of
    out_dir's last build that dvc.lock records and DVC's local cache holds; {} when none.

    `stage` (e.g. `fetch@lila`) names the stage in the one line logged when there is none.
    """
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    start = Path(out_dir).absolute()
    while not start.is_dir():  # DVC deleted the output before running its stage
        start = start.parent
    try:
        root = Path(Repo.find_root(str(start)))
    except NotDvcRepoError:
        return {}
    rel = Path(os.path.relpath(Path(out_dir).absolute(), root)).as_posix()
    md5 = locked_dir_md5(root, rel)
    if md5 is None:
        log.info(FIRST, stage, rel)
        return {}
    repo = Repo(str(root))
    try:
        odb = repo.cache.local
        listing_path = Path(odb.oid_to_path(md5))
        if not listing_path.is_file():  # e.g. a fresh clone that never pulled that build
            log.info(FIRST, stage, rel)
            return {}
        try:
            listing = json.loads(listing_path.read_text(encoding="utf-8"))
            files = {e["relpath"]: odb.oid_to_path(e["md5"]) for e in listing}
        except (OSError, ValueError, KeyError, TypeError):
            return damaged(stage, rel, "its file list cannot be read")
        if MANIFEST not in files:
            return damaged(stage, rel, f"its file list has no {MANIFEST}")
        if not os.path.isfile(files[MANIFEST]):  # the listing was pulled, the files were not
            log.info(FIRST, stage, rel)
            return {}
        try:
            columns = ["url", "sha256", "shard", "offset", "bytes"]
            table = pq.read_table(files[MANIFEST], columns=columns)
        except (OSError, ValueError, KeyError, TypeError):
            return damaged(stage, rel, f"its {MANIFEST} cannot be read")
    finally:
        repo.close()
    out = {}
    for rec in table.to_pylist():
        path = files.get(rec["shard"]) if rec["shard"] else None
        if path is not None and rec["url"] and rec["sha256"] and os.path.isfile(path):
            out[rec["url"]] = (rec["sha256"], path, rec["offset"], rec["bytes"])
    return out


def damaged(stage: str, rel: str, why: str) -> dict:
    """Log that the cached build cannot be reused, and why (no cache paths); return {}."""
    log.warning(
        "%s: the earlier build of %s in DVC's cache is damaged (%s); its items are "
        "downloaded again",
        stage,
        rel,
        why,
    )
    return {}
