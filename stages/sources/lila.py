"""LILA camera traps: a datasets index CSV, COCO Camera Traps metadata, images on three clouds."""

from __future__ import annotations

import contextlib
import csv
import difflib
import gc
import hashlib
import io
import logging
import multiprocessing
import os
import posixpath
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson

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


def inspect_metadata(path: Path, max_bytes: int) -> tuple[str | None, int]:
    """Check a metadata zip (or bare JSON); return its JSON member (None if bare) and size."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(64).lstrip()
        if not head.startswith(b"{"):
            raise MetadataError(f"{path.name}: neither a zip nor a JSON object")
        if path.stat().st_size > max_bytes:
            raise MetadataError(f"metadata JSON exceeds the configured limit of {max_bytes} bytes")
        return None, path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf:
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
    return members[0].filename, members[0].file_size


def open_member(path: Path, member: str | None):
    """Open a checked metadata file (a zip member, or the file itself) as a binary stream."""
    if member is None:
        return open(path, "rb")
    return zipfile.ZipFile(path).open(member)


def open_metadata(path: Path, max_bytes: int):
    """Check, then open, the COCO Camera Traps JSON inside a metadata zip (or a bare JSON)."""
    member, _ = inspect_metadata(path, max_bytes)
    return open_member(path, member)


def safe_relpath(name) -> str:
    """Return a metadata file_name as a safe relative POSIX path, or raise."""
    if not isinstance(name, str):
        raise MetadataError(f"file_name must be a string, got {name!r}")
    rel = name.replace("\\", "/")
    if ".." not in rel and ":" not in rel and "\x00" not in rel and "//" not in rel:
        if rel and rel[0] != "/" and rel[-1] != "/":
            return rel  # the common case, without splitting
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


@dataclass
class Metadata:
    """What selection needs from a COCO Camera Traps file: categories, compact annotations,
    and full records only for the images that were selected."""

    categories: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    n_images: int = 0
    n_annotations: int = 0
    ann_image: list[str] = field(default_factory=list)
    ann_parked: list = field(default_factory=list)  # per batch: ids joined by SEP, or a list
    ann_cat: list[int] = field(default_factory=list)
    ann_box: dict[int, tuple[str, list]] = field(default_factory=dict)  # index -> (kind, box)
    images: dict[str, dict] = field(default_factory=dict)


def _stream(source):
    """Open a fresh binary stream from a path, bytes, or a zero-argument callable."""
    if callable(source):
        return source()
    if isinstance(source, bytes | bytearray):
        return io.BytesIO(source)
    return open(source, "rb")


SEP = "\x00"


def _add_annotations(meta: Metadata, batch: list, wanted: set | None) -> None:
    """Append a batch of annotations (of wanted categories, if known) plus sparse boxes."""
    base = len(meta.ann_cat)
    meta.n_annotations += len(batch)
    try:
        if wanted is not None:
            # Categories came first (as in NACTI): keep only what selection can use.
            batch = [d for d in batch if d["category_id"] in wanted]
        ids = [d["image_id"] for d in batch]
        meta.ann_cat.extend([d["category_id"] for d in batch])
        boxed = [(i, d) for i, d in enumerate(batch) if "bbox" in d or "bbox_relative" in d]
    except (KeyError, TypeError) as exc:
        raise MetadataError(
            f"an annotation lacks image_id/category_id or is not an object: {exc}"
        ) from None
    # Park ids as one joined string per batch: thousands of small strings kept alive between
    # freed batches would pin the allocator's arenas and inflate peak memory.
    if ids:
        try:
            joined = SEP.join(ids)
        except TypeError:
            joined = None  # int ids in older datasets
        ok = joined is not None and joined.count(SEP) == len(ids) - 1
        meta.ann_parked.append(joined if ok else [str(i) for i in ids])
    for i, d in boxed:
        kind = "bbox" if d.get("bbox") is not None else "bbox_relative"
        box = d.get(kind)
        if box is None:
            continue
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
        ):
            raise MetadataError(f"{kind} must be [x, y, width, height] numbers, got {box!r}")
        meta.ann_box[base + i] = (kind, box)


def _unpark(meta: Metadata) -> None:
    """Turn parked annotation ids back into one list of str (allocated compactly, in one go)."""
    for parked in meta.ann_parked:
        meta.ann_image.extend(parked.split(SEP) if isinstance(parked, str) else parked)
    meta.ann_parked.clear()


def _take_images(meta: Metadata, batch: list, wanted: set[str]) -> None:
    """Keep the records of wanted images from a batch."""
    try:
        if not batch or type(batch[0]["id"]) is str:  # noqa: E721
            hits = [d for d in batch if d["id"] in wanted]
        else:  # older datasets use int ids; annotations were normalised to str
            hits = [d for d in batch if str(d["id"]) in wanted]
    except (KeyError, TypeError):
        bad = next(d for d in batch if not isinstance(d, dict) or "id" not in d)
        raise MetadataError(f"an image lacks an id or is not an object: {bad!r:.200}") from None
    for d in hits:
        meta.images[str(d["id"])] = d


@contextlib.contextmanager
def paused_gc():
    """Pause the cyclic GC: bulk parsing makes millions of acyclic objects it would rescan."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # What survived is long-lived: freeze it so later collections do not rescan it.
        gc.freeze()
        if was:
            gc.enable()


PARALLEL_MIN_BYTES = 64 << 20


def _document(source, max_bytes: int | None):
    """Stream a metadata document, decoding images and annotations in batches."""
    # exact_integers off: ids and sizes are type-checked where they are used.
    return iter_document(
        _stream(source), {"images", "annotations"}, max_bytes=max_bytes, exact_integers=False
    )


def _image_batches(source, max_bytes: int | None):
    """Yield the batches of the images array, then stop reading the file."""
    in_images = False
    for key, kind, payload in _document(source, max_bytes):
        if key == "images":
            in_images = True
            if kind == "batch":
                yield payload
        elif in_images:
            return


def _spool_images(source, max_bytes: int | None, ids_path: str, recs_path: str) -> int:
    """Write every image's id and record, one JSON line each, to two files (child process)."""
    n = 0
    with paused_gc(), open(ids_path, "wb") as fi, open(recs_path, "wb") as fr:
        for batch in _image_batches(source, max_bytes):
            try:
                ids = [orjson.dumps(str(d["id"])) for d in batch]
            except (KeyError, TypeError):
                raise MetadataError("an image lacks an id or is not an object") from None
            fi.write(b"\n".join(ids) + b"\n")
            fr.write(b"\n".join(map(orjson.dumps, batch)) + b"\n")
            n += len(ids)
    return n


class ImageSpool:
    """Read the images array in a second process while this one reads the annotations.

    Without it, a file that lists images before annotations (NACTI) needs a second pass over
    the images after selection; with it that pass runs on the other core, and this process
    only picks the selected lines from the spool (JSON lines on local disk).
    """

    def __init__(self, source, max_bytes: int | None):
        import tempfile
        from concurrent.futures import ProcessPoolExecutor

        self.dir = tempfile.mkdtemp(prefix="lila-spool-")
        self.ids, self.recs = f"{self.dir}/ids.jsonl", f"{self.dir}/images.jsonl"
        ctx = multiprocessing.get_context("fork")  # the source may be a closure
        self.pool = ProcessPoolExecutor(1, mp_context=ctx)
        self.future = self.pool.submit(_spool_images, source, max_bytes, self.ids, self.recs)

    def pick(self, meta: Metadata, wanted: set[str]) -> None:
        """Wait for the spool, then keep the records of wanted images."""
        self.future.result()  # re-raises the child's MetadataError, if any
        keys = {orjson.dumps(i) + b"\n" for i in wanted}
        # Both files in step, line by line: memory stays flat whatever the dataset size.
        with open(self.ids, "rb") as fi, open(self.recs, "rb") as fr:
            for key, line in zip(fi, fr, strict=True):
                if key in keys:
                    d = orjson.loads(line)
                    meta.images[str(d["id"])] = d

    def close(self) -> None:
        """Stop the child if still running and remove the spool."""
        import shutil

        self.future.cancel()
        for proc in list(getattr(self.pool, "_processes", {}).values()):
            proc.terminate()  # not needed any more, or the parent failed
        self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def read_metadata(
    source,
    cfg: dict,
    max_bytes: int | None = None,
    *,
    size: int | None = None,
    parallel: bool | None = None,
) -> tuple[Metadata, Selection]:
    """Stream a COCO Camera Traps JSON and select images, without loading it whole.

    `parallel` (default: when `size` or the file's size is at least 64 MiB) reads the images
    array in a second process; results are the same either way.
    """
    if parallel is None:
        if size is None and isinstance(source, str | Path):
            size = os.path.getsize(source)
        parallel = (size or 0) >= PARALLEL_MIN_BYTES
    spool = ImageSpool(source, max_bytes) if parallel else None
    try:
        with paused_gc():
            return _read_metadata(source, cfg, max_bytes, spool)
    finally:
        if spool is not None:
            spool.close()


def _read_metadata(
    source, cfg: dict, max_bytes: int | None, spool: ImageSpool | None
) -> tuple[Metadata, Selection]:
    """Read categories and annotations, select, and keep the selected images' records.

    One pass reads categories and annotations; image records are kept only for selected
    images: inline when the file lists images last, else (NACTI lists them first) from the
    spool a helper process wrote meanwhile, or from a second pass over the images array.
    """
    meta = Metadata()
    sel: Selection | None = None
    seen: set[str] = set()
    images_done = False
    current = None
    wanted_cats: set | None = None
    for key, kind, payload in _document(source, max_bytes):
        if key != current:
            if current is not None:
                seen.add(current)
            current = key
        if key == "images" and kind == "batch":
            meta.n_images += len(payload)
            if sel is None and {"categories", "annotations"} <= seen:
                _unpark(meta)
                sel = select(meta, cfg)
            if sel is not None:
                _take_images(meta, payload, sel.wanted)  # images listed last: filter inline
                images_done = True
            # Else images come first: the spool process (or a second pass) takes them.
        elif key == "annotations" and kind == "batch":
            _add_annotations(meta, payload, wanted_cats)
        elif key == "categories" and kind == "value":
            if not isinstance(payload, list) or not all(isinstance(c, dict) for c in payload):
                raise MetadataError("categories must be a list of objects")
            meta.categories = payload
            if not payload:
                raise MetadataError("metadata has no categories")
            if not meta.ann_cat:
                cat_map = match_classes(payload, classes(cfg))
                wanted_cats = set().union(*cat_map.values())
        elif key == "info" and kind == "value":
            meta.info = payload if isinstance(payload, dict) else {}
        elif key in ("images", "annotations") and kind == "value":
            raise MetadataError(f"{key} must be a list")
    if not meta.categories:
        raise MetadataError("metadata has no categories")
    if sel is None:
        _unpark(meta)
        sel = select(meta, cfg)
    if not images_done and sel.wanted:
        if spool is not None:
            spool.pick(meta, sel.wanted)
        else:
            # A second pass, stopping after the images array. Holding every image record
            # from the first pass instead costs ~1 GB more on NACTI.
            for batch in _image_batches(source, max_bytes):
                _take_images(meta, batch, sel.wanted)
    missing = sel.wanted - meta.images.keys()
    if missing:
        raise MetadataError(
            f"{len(missing)} annotated image id(s) not in images, e.g. {min(missing)!r}"
        )
    return meta, sel


# ---------------------------------------------------------------- selection


def match_classes(categories: list[dict], wanted: list[str]) -> dict[str, set[int]]:
    """Map each wanted class (common or scientific name) to category ids, or raise."""
    index: dict[str, set[int]] = {}
    for cat in categories:
        for key in ("common name", "common_name", "name", "species"):
            value = cat.get(key)
            if isinstance(value, str) and value.strip():
                index.setdefault(value.strip().lower(), set()).add(cat.get("id"))
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


def ranker(seed: int):
    """Return a sort key ranking images by a seeded hash of their id (stable as data grows)."""
    blake, key = hashlib.blake2b, seed.to_bytes(8, "big", signed=True)

    def rank(image_id: str) -> bytes:
        raw = image_id.encode()
        return blake(raw, digest_size=8, key=key).digest() + raw  # the id breaks ties

    return rank


@dataclass
class Selection:
    """Images chosen per class, in a stable order, with what was left out and why."""

    image_labels: dict[str, list[str]]  # image id -> class names (config order)
    order: list[str]  # image ids, sorted
    stats: dict
    wanted: set[str] = field(default_factory=set)
    class_of: dict = field(default_factory=dict)  # category id -> class names (config order)


def select(meta: Metadata, cfg: dict) -> Selection:
    """Choose images per class: seeded-hash ranking, per-class caps, then a byte budget."""
    names = classes(cfg)
    cat_map = match_classes(meta.categories, names)
    cat_to_class: dict = {}
    for name, ids in cat_map.items():
        for cid in ids:
            cat_to_class.setdefault(cid, []).append(name)
    per_class: dict[str, set[str]] = {n: set() for n in names}
    get = cat_to_class.get
    for image_id, hit in zip(meta.ann_image, map(get, meta.ann_cat), strict=True):
        if hit is not None:
            for name in hit:
                per_class[name].add(image_id)
    rank = ranker(int(cfg.get("seed") or 0))
    caps = {str(k).lower(): v for k, v in (cfg.get("caps") or {}).items()}
    unknown_caps = set(caps) - {n.lower() for n in names}
    if unknown_caps:
        raise ConfigError(f"caps name classes not in `classes`: {', '.join(sorted(unknown_caps))}")
    budget = cfg.get("byte_budget")
    ranked: dict[str, list[str]] = {}
    stats = {"available": {}, "capped": {}, "selected": {}, "budget_dropped": 0}
    for name in names:
        cap = caps.get(name.lower(), cfg.get("cap"))
        pool = per_class[name]
        stats["available"][name] = len(pool)
        if budget is None and (cap is None or int(cap) >= len(pool)):
            ids = pool  # everything is taken: no ranking needed
        else:
            # A full sort beats heapq.nsmallest here: caps are often a large share of the pool.
            ids = sorted(pool, key=rank)[: None if cap is None else int(cap)]
        stats["capped"][name] = len(pool) - len(ids)
        ranked[name] = ids
    # Byte budget: take images round-robin by rank so every class gets its fair prefix.
    est = int(cfg.get("est_bytes_per_image") or 0)
    chosen: set[str] = set()
    total, stopped = 0, False
    if budget is None:
        for ids in ranked.values():
            chosen.update(ids)
        total = est * len(chosen)
    else:
        depth = max((len(v) for v in ranked.values()), default=0)
        for pos in range(depth):
            for name in names:
                if pos >= len(ranked[name]):
                    continue
                image_id = ranked[name][pos]
                if image_id in chosen:
                    continue
                if stopped or total + est > int(budget):
                    stopped = True
                    stats["budget_dropped"] += 1
                    continue
                chosen.add(image_id)
                total += est
    stats["estimated_bytes"] = total
    stats["budget_exhausted"] = stopped
    # Labels come from every wanted annotation of a chosen image, not only the one that won it.
    labels: dict[str, list[str]] = {}
    for name in names:  # config order, so labels come out sorted by class id
        hits = (
            per_class[name] & chosen
            if len(chosen) < len(per_class[name])
            else [i for i in per_class[name] if i in chosen]
        )
        for image_id in hits:
            labels.setdefault(image_id, []).append(name)
        stats["selected"][name] = len(hits)
    return Selection(labels, sorted(labels), stats, set(labels), cat_to_class)


def build_rows(meta: Metadata, sel: Selection, cfg: dict, base_url: str, source: str) -> list[Row]:
    """Turn selected images into pending rows with URLs, sizes, boxes and metadata."""
    with paused_gc():
        return _build_rows(meta, sel, cfg, base_url, source)


def _build_rows(meta: Metadata, sel: Selection, cfg: dict, base_url: str, source: str) -> list[Row]:
    boxes: dict[str, list[dict]] = {}
    for idx, (kind, box) in sorted(meta.ann_box.items()):
        image_id = meta.ann_image[idx]
        names = sel.class_of.get(meta.ann_cat[idx])
        if names is None or image_id not in sel.wanted:
            continue
        name = names[0]
        im = meta.images[image_id]
        if kind == "bbox_relative":
            w, h = im.get("width"), im.get("height")
            if not w or not h:
                continue  # cannot place a relative box without the image size
            box = [box[0] * w, box[1] * h, box[2] * w, box[3] * h]
        x, y, w, h = (float(v) for v in box)
        boxes.setdefault(image_id, []).append({"label": name, "x": x, "y": y, "w": w, "h": h})
    dataset = cfg["dataset"]
    prefix, base = f"{dataset}/", f"{base_url}/"
    images, labels, no_boxes = meta.images, sel.image_labels, []
    rows = []
    for image_id in sel.order:
        im = images[image_id]
        name = im.get("file_name")
        if name is None:
            raise MetadataError(f"image {image_id!r} lacks the required field 'file_name'")
        rel = safe_relpath(name)
        width, height = im.get("width"), im.get("height")
        if type(width) is not int or type(height) is not int:  # noqa: E721 - fast path
            width, height = _dim(im, "width"), _dim(im, "height")
        info = {"dataset": dataset, "file_name": rel}
        for key in ("location", "datetime", "seq_id"):
            value = im.get(key)
            if value is not None:
                info[key] = value if type(value) is str else str(value)  # noqa: E721
        row = Row(
            prefix + image_id,
            source,
            image_id,
            base + rel,
            None,
            None,
            width,
            height,
            labels[image_id],
            None,
            boxes.get(image_id, no_boxes),
            "pending",
            "",
            None,
            None,
            info,
        )
        if im.get("corrupt"):
            row.status, row.reason = "corrupt", "marked corrupt in metadata"
        rows.append(row)
    return rows


def _dim(im: dict, key: str) -> int | None:
    """Return an image's width or height as an int, or raise on a non-number."""
    value = im.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MetadataError(f"image {im.get('id')!r}: {key} must be a number, got {value!r}")
    return int(value)


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
    path = dl.object_path(res.sha256)
    member, size = inspect_metadata(path, max_bytes)  # checked once; then opened per pass
    meta, sel = read_metadata(lambda: open_member(path, member), cfg, max_bytes, size=size)
    rows = build_rows(meta, sel, cfg, entry["image_base_url"], ctx.source)
    stats = {
        "dataset": entry["name"],
        "metadata_images": meta.n_images,
        "metadata_annotations": meta.n_annotations,
        **sel.stats,
    }
    log.info(
        "selected %d of %d images (%s)",
        len(rows),
        meta.n_images,
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
