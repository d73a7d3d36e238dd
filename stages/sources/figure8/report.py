"""A Figure Eight job report: the zipped CSV, its annotation URLs and its broken links.

Rules (the original's intent, without its bugs; ../shared/notes/deepcell-figure8-camio.md):
- the zip holds exactly one CSV, read by column name; the columns fetch uses must be there;
- `broken_link` is parsed robustly (booleans, "true"/"false" in any case, 1/0 and 1.0/0.0,
  empty or missing: not broken); any other value is an error naming the row;
- a broken row is dropped when another row for the same `image_url` succeeds (the image was
  re-uploaded and annotated); the rest are written out with every column
  (`job_<id>_<type>_report_broken_links.csv`) and as `identifier,image_url`
  (`job_<id>_reupload.csv`), ready to upload again;
- each good row's annotation image is the `url` inside its JSON `annotation` cell.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from stages.core.errors import CorruptMetadata, MetadataError
from stages.formats.archives import ZIP_READ_ERRORS, open_member, single_member

REQUIRED = ("annotation", "image_url", "identifier")
TRUE = {"true", "1", "1.0"}  # 1.0 and 0.0: the column after a round trip through pandas
FALSE = {"false", "0", "0.0", ""}


@dataclass(frozen=True)
class Report:
    """The report's columns, its rows to download, and its rows still broken."""

    columns: list[str]
    good: list[dict]  # each with `_annotation_url` and `_row` (its line in the CSV) added
    broken: list[dict]
    rows: int = 0  # rows in the report
    cleared: int = 0  # broken rows whose image a later row annotated
    other: int = 0  # rows of other identifiers, skipped
    text: str = ""  # the CSV as served


def is_broken(value, row: int) -> bool:
    """Return a `broken_link` cell as a bool (missing or empty: not broken)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise MetadataError(f"report row {row}: broken_link is {value!r}, not true/false/1/0")


def annotation_url(cell: str, row: int) -> str:
    """Return the annotation image URL inside a row's JSON `annotation` cell."""
    try:
        value = json.loads(cell)
    except (TypeError, ValueError):
        raise MetadataError(f"report row {row}: the annotation cell is not JSON") from None
    url = value.get("url") if isinstance(value, dict) else None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise MetadataError(f"report row {row}: the annotation has no http(s) `url`")
    return url


def read_report(path: Path, max_bytes: int, identifier: str | None = None) -> Report:
    """Read a downloaded report (a zip holding one CSV, or the CSV itself); with an
    identifier, rows of other identifiers (other uploads to the job) are counted and skipped
    before anything else is checked."""
    member, _ = single_member(Path(path), ".csv", max_bytes)
    try:
        with open_member(Path(path), member) as fh:
            text = fh.read().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CorruptMetadata(f"{Path(path).name}: the report is not UTF-8: {exc.reason}") from None
    except ZIP_READ_ERRORS as exc:  # a damaged member shows only when it is read
        raise CorruptMetadata(f"{Path(path).name}: corrupt zip: {exc}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    except csv.Error as exc:
        raise MetadataError(f"{Path(path).name}: malformed report CSV: {exc}") from None
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise MetadataError(
            f"{Path(path).name}: the report lacks the column(s) {missing} (found {columns}): "
            "is this a full report of an annotation job?"
        )
    good, broken, annotated, cleared, other = [], {}, set(), 0, 0
    for number, row in enumerate(rows, 2):  # row 1 is the header
        if None in row or any(v is None for v in row.values()):
            raise MetadataError(f"{Path(path).name}: report row {number} has the wrong length")
        if identifier is not None and row["identifier"] != identifier:
            other += 1
            continue
        image = row["image_url"]
        if is_broken(row.get("broken_link"), number):
            if image not in annotated:
                broken.setdefault(image, row)
            continue
        annotated.add(image)
        if broken.pop(image, None) is not None:  # re-uploaded and annotated: no longer broken
            cleared += 1
        url = annotation_url(row["annotation"], number)
        good.append({**row, "_annotation_url": url, "_row": number})
    return Report(columns, good, list(broken.values()), len(rows), cleared, other, text)


def broken_csvs(report: Report) -> tuple[bytes, bytes]:
    """Return the broken rows with every column, and as `identifier,image_url`."""
    full, reupload = io.StringIO(), io.StringIO()
    writer = csv.DictWriter(full, fieldnames=report.columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(report.broken)
    short = csv.writer(reupload, lineterminator="\n")
    short.writerow(["identifier", "image_url"])
    short.writerows([r["identifier"], r["image_url"]] for r in report.broken)
    return full.getvalue().encode(), reupload.getvalue().encode()
