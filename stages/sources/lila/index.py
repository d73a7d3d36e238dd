"""The LILA datasets index: one CSV row per dataset, with metadata and image URLs per cloud."""

from __future__ import annotations

import csv
import difflib
import io
from dataclasses import dataclass

from stages.core.errors import ConfigError, MetadataError


@dataclass(frozen=True)
class Entry:
    """One dataset's row of the index, for one cloud."""

    name: str
    metadata_url: str
    image_base_url: str  # no trailing slash: image URL = base + "/" + file_name


def parse_index(text: str, dataset: str, cloud: str) -> Entry:
    """Find a dataset's row in the LILA index CSV by column name; return its URLs."""
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        header = reader.fieldnames or []
        rows = list(reader)
    except csv.Error as exc:
        raise MetadataError(f"malformed datasets index CSV: {exc}") from None
    need = ["name", f"metadata_url_{cloud}", f"image_base_url_{cloud}"]
    missing = [c for c in need if c not in header]
    if missing:
        raise MetadataError(
            f"datasets index CSV lacks column(s) {', '.join(missing)} (has: {', '.join(header)})"
        )
    for i, row in enumerate(rows, start=2):
        if None in row or any(v is None for v in row.values()):
            raise MetadataError(f"datasets index CSV line {i}: wrong number of fields")
    by_name = {r["name"].strip(): r for r in rows}
    if dataset not in by_name:
        close = difflib.get_close_matches(dataset, list(by_name), n=5, cutoff=0.4)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ConfigError(f"dataset {dataset!r} is not in the LILA index{hint}")
    row = by_name[dataset]
    meta, base = row[f"metadata_url_{cloud}"].strip(), row[f"image_base_url_{cloud}"].strip()
    for what, url in (("metadata_url", meta), ("image_base_url", base)):
        if not url.startswith(("http://", "https://")):
            raise MetadataError(f"{dataset}: {what}_{cloud} is not an http(s) URL: {url!r}")
    return Entry(dataset, meta, base.rstrip("/"))
