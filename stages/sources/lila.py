"""LILA camera traps: a datasets index CSV, COCO Camera Traps metadata, images on three clouds."""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import logging
import os
import posixpath
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from stages.errors import ConfigError, MetadataError
from stages.jsonstream import iter_document
from stages.sources import Context, Plan
from stages.store import Row

log = logging.getLogger("stages.sources.lila")

VIDEO = False
CLOUDS = ("gcp", "aws", "azure")
INDEX_MAX_BYTES = 64 << 20


def classes(cfg: dict) -> list[str]:
    """Return the configured class names in id order."""
    names = [str(c).strip() for c in cfg.get("classes") or []]
    if not names:
        raise ConfigError("sources.lila.classes is empty: list classes by common or Latin name")
    if len({n.lower() for n in names}) != len(names):
        raise ConfigError("sources.lila.classes has duplicates")
    return names


# ---------------------------------------------------------------- index CSV


def parse_index(text: str, dataset: str, cloud: str) -> dict:
    """Find a dataset's row in the LILA index CSV by column name; return its URLs."""
    if cloud not in CLOUDS:
        raise ConfigError(f"cloud must be one of {', '.join(CLOUDS)}, not {cloud!r}")
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
    return {"name": dataset, "metadata_url": meta, "image_base_url": base.rstrip("/")}


# ---------------------------------------------------------------- metadata


def open_metadata(path: Path, max_bytes: int):
    """Open the COCO Camera Traps JSON inside a metadata zip (or a bare JSON) as a stream."""
    if not zipfile.is_zipfile(path):
        head = Path(path).open("rb").read(64).lstrip()
        if not head.startswith(b"{"):
            raise MetadataError(f"{path.name}: neither a zip nor a JSON object")
        if path.stat().st_size > max_bytes:
            raise MetadataError(f"metadata JSON exceeds the configured limit of {max_bytes} bytes")
        return open(path, "rb")
    try:
        zf = zipfile.ZipFile(path)
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise MetadataError(f"{path.name}: malformed zip: {exc}") from None
    for info in infos:
        name = info.filename
        if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
            raise MetadataError(f"{path.name}: unsafe member name {name!r} in metadata zip")
    members = [i for i in infos if i.filename.lower().endswith(".json") and not i.is_dir()]
    if len(members) != 1:
        found = ", ".join(i.filename for i in infos) or "nothing"
        raise MetadataError(
            f"{path.name}: expected exactly one .json member in the metadata zip, found {found}"
        )
    if members[0].file_size > max_bytes:
        raise MetadataError(
            f"metadata JSON {members[0].filename} is {members[0].file_size} bytes, over the "
            f"configured limit of {max_bytes} bytes"
        )
    return zf.open(members[0])


def safe_relpath(name: str) -> str:
    """Return a metadata file_name as a safe relative POSIX path, or raise."""
    rel = str(name).replace("\\", "/")
    parts = rel.split("/")
    if (
        not rel
        or rel.startswith("/")
        or (len(rel) > 1 and rel[1] == ":")
        or "\x00" in rel
        or any(p in ("..", "") for p in parts)
    ):
        raise MetadataError(f"unsafe file_name in metadata: {name!r}")
    return posixpath.normpath(rel)


def _column(batch: list[dict], key: str, kind: str):
    """Pull one field out of a batch of dicts as an Arrow array."""
    try:
        if kind == "id":
            return pa.array([str(d[key]) for d in batch], pa.string())
        values = [d.get(key) for d in batch]
        if kind == "int":
            return pa.array(values, pa.int64())
        if kind == "str":
            return pa.array([None if v is None else str(v) for v in values], pa.string())
        if kind == "bool":
            return pa.array([bool(v) if v is not None else None for v in values], pa.bool_())
        return pa.array(values)
    except KeyError:
        raise MetadataError(f"an entry lacks the required field {key!r}") from None
    except (TypeError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise MetadataError(f"field {key!r} has a value of the wrong type: {exc}") from None


IMAGE_FIELDS = {
    "id": "id",
    "file_name": "id",
    "width": "int",
    "height": "int",
    "location": "str",
    "datetime": "str",
    "seq_id": "str",
    "corrupt": "bool",
}


@dataclass
class Metadata:
    """The parts of a COCO Camera Traps file that selection needs, held compactly."""

    categories: list[dict] = field(default_factory=list)
    images: pa.Table | None = None
    annotations: pa.Table | None = None
    info: dict = field(default_factory=dict)


def read_metadata(fp, max_bytes: int | None = None) -> Metadata:
    """Stream a COCO Camera Traps JSON into compact columns, without loading it whole."""
    img_chunks, ann_chunks, meta = [], [], Metadata()
    for key, kind, payload in iter_document(fp, {"images", "annotations"}, max_bytes=max_bytes):
        if key == "images" and kind == "batch":
            if not all(isinstance(d, dict) for d in payload):
                raise MetadataError("images must be a list of objects")
            cols = {k: _column(payload, k, t) for k, t in IMAGE_FIELDS.items()}
            for fn in cols["file_name"].to_pylist():
                if ".." in fn or fn[:1] in ("/", "\\") or ":" in fn[:2]:
                    safe_relpath(fn)
            img_chunks.append(pa.table(cols))
        elif key == "annotations" and kind == "batch":
            if not all(isinstance(d, dict) for d in payload):
                raise MetadataError("annotations must be a list of objects")
            ann_chunks.append(
                pa.table(
                    {
                        "image_id": _column(payload, "image_id", "id"),
                        "category_id": _column(payload, "category_id", "int"),
                        "bbox": _bbox_column(payload, "bbox"),
                        "bbox_relative": _bbox_column(payload, "bbox_relative"),
                    }
                )
            )
        elif key == "categories" and kind == "value":
            if not isinstance(payload, list) or not all(isinstance(c, dict) for c in payload):
                raise MetadataError("categories must be a list of objects")
            meta.categories = payload
        elif key == "info" and kind == "value":
            meta.info = payload if isinstance(payload, dict) else {}
    if not meta.categories:
        raise MetadataError("metadata has no categories")
    meta.images = _concat(img_chunks, {k: _column([], k, t).type for k, t in IMAGE_FIELDS.items()})
    meta.annotations = _concat(
        ann_chunks,
        {
            "image_id": pa.string(),
            "category_id": pa.int64(),
            "bbox": pa.list_(pa.float64()),
            "bbox_relative": pa.list_(pa.float64()),
        },
    )
    return meta


def _bbox_column(batch: list[dict], key: str):
    """Pull an optional [x, y, w, h] field as list<double>, null where absent."""
    values = [d.get(key) for d in batch]
    for v in values:
        if v is not None and (not isinstance(v, list) or len(v) != 4):
            raise MetadataError(f"{key} must be [x, y, width, height], got {v!r}")
    try:
        return pa.array(values, pa.list_(pa.float64()))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise MetadataError(f"{key} holds non-numbers: {exc}") from None


def _concat(chunks: list[pa.Table], types: dict) -> pa.Table:
    """Concatenate batch tables, or an empty table of the right schema."""
    if not chunks:
        return pa.table({k: pa.array([], t) for k, t in types.items()})
    return pa.concat_tables(chunks).combine_chunks()


# ---------------------------------------------------------------- selection


def match_classes(categories: list[dict], wanted: list[str]) -> dict[str, set[int]]:
    """Map each wanted class (common or scientific name) to category ids, or raise."""
    index: dict[str, set[int]] = {}
    for cat in categories:
        for key in ("common name", "common_name", "name", "species"):
            value = cat.get(key)
            if isinstance(value, str) and value.strip():
                index.setdefault(value.strip().lower(), set()).add(int(cat["id"]))
    out, unknown = {}, []
    for name in wanted:
        ids = index.get(name.strip().lower())
        if ids:
            out[name] = ids
        else:
            unknown.append(name)
    if unknown:
        lines = []
        for name in unknown:
            close = difflib.get_close_matches(name.lower(), list(index), n=4, cutoff=0.5)
            lines.append(f"{name!r}" + (f" (close: {', '.join(close)})" if close else ""))
        raise ConfigError(f"unknown class name(s): {'; '.join(lines)}")
    return out


def rank_key(seed: int, image_id: str) -> bytes:
    """Rank an image inside its class by a seeded hash of its id (stable as data grows)."""
    return hashlib.blake2b(f"{seed}:{image_id}".encode(), digest_size=8).digest()


@dataclass
class Selection:
    """Images chosen per class, in a stable order, with what was left out and why."""

    image_labels: dict[str, list[str]]  # image id -> class names (config order)
    order: list[str]  # image ids, sorted
    stats: dict


def select(meta: Metadata, cfg: dict) -> Selection:
    """Choose images per class: seeded-hash ranking, per-class caps, then a byte budget."""
    names = classes(cfg)
    cat_map = match_classes(meta.categories, names)
    cat_to_class = {}
    for name, ids in cat_map.items():
        for cid in ids:
            cat_to_class.setdefault(cid, []).append(name)
    ann = meta.annotations
    wanted = pa.array(sorted(cat_to_class), pa.int64())
    import pyarrow.compute as pc

    hit = ann.filter(pc.is_in(ann["category_id"], value_set=wanted))
    per_class: dict[str, set[str]] = {n: set() for n in names}
    for image_id, cid in zip(
        hit["image_id"].to_pylist(), hit["category_id"].to_pylist(), strict=True
    ):
        for name in cat_to_class[cid]:
            per_class[name].add(image_id)
    seed = int(cfg.get("seed") or 0)
    caps = {str(k).lower(): v for k, v in (cfg.get("caps") or {}).items()}
    unknown_caps = set(caps) - {n.lower() for n in names}
    if unknown_caps:
        raise ConfigError(f"caps name classes not in `classes`: {', '.join(sorted(unknown_caps))}")
    ranked: dict[str, list[str]] = {}
    stats = {"available": {}, "capped": {}, "selected": {}, "budget_dropped": 0}
    for name in names:
        cap = caps.get(name.lower(), cfg.get("cap"))
        ids = sorted(per_class[name], key=lambda i: rank_key(seed, i))
        stats["available"][name] = len(ids)
        if cap is not None:
            ids = ids[: int(cap)]
        stats["capped"][name] = stats["available"][name] - len(ids)
        ranked[name] = ids
    # Byte budget: take images round-robin by rank so every class gets its fair prefix.
    budget = cfg.get("byte_budget")
    est = int(cfg.get("est_bytes_per_image") or 0)
    chosen: dict[str, list[str]] = {}
    total, stopped = 0, False
    depth = max((len(v) for v in ranked.values()), default=0)
    for pos in range(depth):
        for name in names:
            if pos >= len(ranked[name]):
                continue
            image_id = ranked[name][pos]
            if image_id in chosen:
                chosen[image_id].append(name)
                continue
            if stopped or (budget is not None and total + est > int(budget)):
                stopped = True
                stats["budget_dropped"] += 1
                continue
            chosen[image_id] = [name]
            total += est
    stats["estimated_bytes"] = total
    stats["budget_exhausted"] = stopped
    for name in names:
        stats["selected"][name] = sum(1 for labels in chosen.values() if name in labels)
    # Labels come from every wanted annotation of a chosen image, not only the one that won it.
    labels = {i: set() for i in chosen}
    for name in names:
        for image_id in per_class[name]:
            if image_id in labels:
                labels[image_id].add(name)
    order_of = {n: i for i, n in enumerate(names)}
    image_labels = {i: sorted(v, key=order_of.__getitem__) for i, v in labels.items()}
    return Selection(image_labels, sorted(image_labels), stats)


def build_rows(meta: Metadata, sel: Selection, cfg: dict, base_url: str, source: str) -> list[Row]:
    """Turn selected images into pending rows with URLs, sizes, boxes and metadata."""
    import pyarrow.compute as pc

    ids = pa.array(sel.order, pa.string())
    imgs = meta.images.filter(pc.is_in(meta.images["id"], value_set=ids)).to_pylist()
    found = {im["id"]: im for im in imgs}
    missing = [i for i in sel.order if i not in found]
    if missing:
        raise MetadataError(f"{len(missing)} annotated image id(s) not in images, e.g. {missing[0]}")
    names = classes(cfg)
    cat_map = match_classes(meta.categories, names)
    cat_to_class = {}
    for name, cids in cat_map.items():
        for cid in cids:
            cat_to_class.setdefault(cid, name)
    ann = meta.annotations.filter(pc.is_in(meta.annotations["image_id"], value_set=ids))
    boxes: dict[str, list[dict]] = {}
    for a in ann.to_pylist():
        name = cat_to_class.get(a["category_id"])
        if name is None:
            continue
        im = found[a["image_id"]]
        box = a["bbox"]
        if box is None and a["bbox_relative"] is not None and im["width"] and im["height"]:
            x, y, w, h = a["bbox_relative"]
            box = [x * im["width"], y * im["height"], w * im["width"], h * im["height"]]
        if box is not None:
            x, y, w, h = (float(v) for v in box)
            boxes.setdefault(a["image_id"], []).append(
                {"label": name, "x": x, "y": y, "w": w, "h": h}
            )
    dataset = cfg["dataset"]
    rows = []
    for image_id in sel.order:
        im = found[image_id]
        rel = safe_relpath(im["file_name"])
        meta_fields = {
            "dataset": dataset,
            "file_name": rel,
            **{k: im[k] for k in ("location", "datetime", "seq_id") if im.get(k) is not None},
        }
        row = Row(
            item_id=f"{dataset}/{image_id}",
            source=source,
            source_id=image_id,
            url=f"{base_url}/{rel}",
            width=im["width"],
            height=im["height"],
            labels=sel.image_labels[image_id],
            boxes=boxes.get(image_id, []),
            status="pending",
            meta=meta_fields,
        )
        if im.get("corrupt"):
            row.status, row.reason = "corrupt", "marked corrupt in metadata"
        rows.append(row)
    return rows


# ---------------------------------------------------------------- plan


def plan(cfg: dict, ctx: Context) -> Plan:
    """Read the index and metadata, select images, and return rows to download."""
    dl = ctx.downloader
    res = dl.fetch(cfg["index_url"], kind="any", refresh=True)
    if res.status != "ok":
        raise MetadataError(f"cannot download the datasets index: {res.status} ({res.reason})")
    path = dl.object_path(res.sha256)
    if res.bytes > INDEX_MAX_BYTES:
        raise MetadataError(f"datasets index is {res.bytes} bytes, over {INDEX_MAX_BYTES}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MetadataError(f"datasets index CSV is not UTF-8: {exc}") from None
    entry = parse_index(text, cfg["dataset"], cfg.get("cloud", "gcp"))
    log.info("%s: metadata %s", entry["name"], entry["metadata_url"])
    res = dl.fetch(entry["metadata_url"], kind="any")
    if res.status != "ok":
        raise MetadataError(f"cannot download the metadata: {res.status} ({res.reason})")
    max_bytes = int(cfg.get("max_metadata_bytes") or 8_000_000_000)
    with open_metadata(dl.object_path(res.sha256), max_bytes) as fp:
        meta = read_metadata(fp, max_bytes=max_bytes)
    sel = select(meta, cfg)
    rows = build_rows(meta, sel, cfg, entry["image_base_url"], ctx.source)
    stats = {
        "dataset": entry["name"],
        "metadata_images": meta.images.num_rows,
        "metadata_annotations": meta.annotations.num_rows,
        **sel.stats,
    }
    log.info(
        "selected %d of %d images (%s)",
        len(rows), meta.images.num_rows,
        ", ".join(f"{k} {v}" for k, v in sel.stats["selected"].items()),
    )
    return Plan(rows, stats)


def request_options(cfg: dict) -> dict:
    """Return downloader options; a SAS token comes from the env var the config names."""
    var = cfg.get("sas_token_env")
    if not var:
        return {}
    token = os.environ.get(var)
    if not token:
        raise ConfigError(f"sources.lila.sas_token_env names {var}, which is not set")
    return {"url_suffix": "?" + token.lstrip("?")}
