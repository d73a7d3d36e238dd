"""labels@<source>: the labels annotators put on the imported files, read back from the target.

Reads the import record, asks the target for the labels on the files it imported (for Tator:
box localizations and states with a class, through the Tator source's code), and writes them
in the three formats Camio's downloader promised (stages/formats/labels.py): `labels.json`
(its shape), `labels.csv` (one row per label occurrence) and `labels.xml` (`labels.xsd`).

Like every stage that reads a platform, DVC re-runs it when its inputs or params change, not
when annotators add labels: run `dvc repro -f labels@<source>` to read them again.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from stages import targets
from stages.core.errors import MetadataError
from stages.core.files import atomic_write
from stages.formats.labels import Label, order, to_csv, to_json, to_xml
from stages.pipeline.entry import run_main, start
from stages.targets import Target
from stages.targets.record import read_record

log = logging.getLogger("stages.labels")
FILES = ("labels.json", "labels.csv", "labels.xml")


def collect(rows: list[dict], target: Target) -> tuple[list[Label], dict]:
    """Return the labels on the imported files (with their camera and time) and metrics."""
    imported = {r["target_id"]: r for r in rows if r["status"] == "imported" and r["target_id"]}
    found, skipped = target.labels(sorted(imported))
    labels = []
    for item in found:
        row = imported.get(item.media)
        if row is None:  # the target answered about a file it was not asked about
            raise MetadataError(f"the target returned labels of {item.media!r}, not imported")
        labels.append(
            Label(
                row["timestamp"],
                row["camera"],
                item.media,
                item.label,
                item.frame,
                item.frame_end,
                item.box,
            )  # fmt: skip
        )
    labels.sort(key=order)
    metrics = {
        "files": len(imported),
        "files_labelled": len({lab.media for lab in labels}),
        "labels": len(labels),
        "boxes": sum(lab.box is not None for lab in labels),
        "spans": sum(lab.box is None for lab in labels),
        "skipped": skipped,
        "classes": dict(sorted(Counter(lab.label for lab in labels).items())),
    }
    return labels, metrics


def write_labels(out_dir: Path, job_id: str, labels: list[Label]) -> None:
    """Write the labels as JSON, CSV and XML."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "labels.json", to_json(job_id, labels))
    atomic_write(out_dir / "labels.csv", to_csv(labels))
    atomic_write(out_dir / "labels.xml", to_xml(job_id, labels))


def main(argv: list[str] | None = None) -> int:
    """Run labels@<source>."""
    run = start(argv, "stages.labels", __doc__)
    args = run.args
    job, rows = read_record(args.inp)
    target = targets.load(run.cfg.import_to, run.section("fetch"))
    try:
        labels, metrics = collect(rows, target)
    finally:
        target.close()
    write_labels(args.out, job["job_id"], labels)
    run.finish(metrics)
    log.info(
        "labels@%s: %d labels (%d boxes, %d spans) on %d of %d imported files",
        args.source,
        metrics["labels"],
        metrics["boxes"],
        metrics["spans"],
        metrics["files_labelled"],
        metrics["files"],
    )
    return 0


if __name__ == "__main__":
    run_main(main)
