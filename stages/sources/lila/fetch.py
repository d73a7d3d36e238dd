"""fetch@lila: the datasets index, then the metadata, then the selected images' rows."""

from __future__ import annotations

import logging

from stages.core.errors import CorruptMetadata, MetadataError
from stages.core.origins import redact
from stages.formats.coco_ct import open_document, read_metadata
from stages.sources import Context, Plan
from stages.sources.lila.index import parse_index
from stages.sources.lila.rows import ClassSelector, build_rows

log = logging.getLogger("stages.sources.lila")


def plan(cfg, ctx: Context) -> Plan:
    """Read the index and metadata, select images, and return rows to download."""
    f = cfg.fetch
    res = ctx.fetch(f.index_url, kind="any", refresh=True, max_bytes=f.max_index_bytes)
    if res.status != "ok":
        raise MetadataError(f"cannot download the datasets index: {res.status} ({res.reason})")
    try:
        text = ctx.object_path(res.sha256).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MetadataError(f"datasets index CSV is not UTF-8: {exc.reason}") from None
    entry = parse_index(text, f.dataset, f.cloud.value)
    log.info("%s: metadata %s", entry.name, redact(entry.metadata_url))
    res = ctx.fetch(
        entry.metadata_url,
        kind="any",
        max_bytes=f.max_metadata_bytes,
        deadline=f.metadata_timeout,
    )
    if res.status != "ok":
        raise MetadataError(f"cannot download the metadata: {res.status} ({res.reason})")
    selector = ClassSelector(cfg)
    try:
        opener, size = open_document(ctx.object_path(res.sha256), f.max_metadata_bytes)
        meta, _ = read_metadata(
            opener,
            selector,
            f.max_metadata_bytes,
            max_value_bytes=f.max_json_value_bytes,
            size=size,
        )
    except CorruptMetadata:
        # A body cut without a Content-Length to tell can look whole: fetch it afresh next
        # run rather than failing on the same bytes forever. (A limit or structure problem
        # keeps the download: re-fetching gigabytes would not change it.)
        ctx.forget(entry.metadata_url)
        raise
    sel = selector.result
    rows = build_rows(meta, sel, f.dataset, entry.image_base_url, ctx.source_name)
    stats = {
        "dataset": entry.name,
        # Which metadata this selection came from: upstream may publish a new version.
        "metadata_sha256": res.sha256,
        "metadata_version": str(meta.info.get("version", "")),
        "metadata_images": meta.n_images,
        "metadata_annotations": meta.n_annotations,
        **sel.stats,
    }
    picked = sel.stats["picked"]
    log.info(
        "selected %d of %d images; items per label, and how many were picked for it where "
        "fewer (a cap bounds the picks; a pick for one class may carry another's label): %s",
        len(rows),
        meta.n_images,
        ", ".join(
            f"{k} {v}" + (f" ({picked[k]} picked)" if picked[k] != v else "")
            for k, v in sel.stats["selected"].items()
        ),
    )
    return Plan(rows, stats)
