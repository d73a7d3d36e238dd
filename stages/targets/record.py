"""The import's record: what each file became on the target (`record.parquet`, one row per
file) and the job (`job.json`: shards with their files and status), written by import@<source>
and read by the status and labels entries."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from stages.core.errors import StoreError
from stages.core.files import atomic_path, atomic_write

RECORD = "record.parquet"
JOB = "job.json"
RECORD_SCHEMA = pa.schema(
    [
        ("sha256", pa.string()),
        ("path", pa.string()),
        ("camera", pa.string()),
        ("timestamp", pa.string()),
        ("lat", pa.float64()),
        ("lng", pa.float64()),
        ("target_id", pa.string()),
        ("job_id", pa.string()),
        ("shard_id", pa.string()),
        # imported (sent now, or found there already: the record is the same either way, so
        # a resumed run ends as an uninterrupted one) or failed
        ("status", pa.string()),
        ("reason", pa.string()),
    ]
)


def shard_status(statuses: list[str]) -> str:
    """Return a shard's status from its files' (complete, failed, uploading or missing)."""
    done = sum(s in ("sent", "present") for s in statuses)
    if done == len(statuses):
        return "complete"
    if any(s == "failed" for s in statuses):
        return "failed"
    return "uploading" if done else "missing"


def write_record(out_dir: Path, record: list[dict], job: dict) -> None:
    """Write the import record and the job, deterministically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(record, schema=RECORD_SCHEMA)
    with atomic_path(out_dir / RECORD) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=False)
    atomic_write(out_dir / JOB, json.dumps(job, indent=2, sort_keys=True) + "\n")


def read_record(record_dir: Path) -> tuple[dict, list[dict]]:
    """Return an import's job and record rows."""
    try:
        job = json.loads((record_dir / JOB).read_text(encoding="utf-8"))
        rows = pq.read_table(record_dir / RECORD).to_pylist()
    except (OSError, ValueError) as exc:
        raise StoreError(f"{record_dir}: no import record ({exc}); run `dvc repro` first") from None
    return job, rows
