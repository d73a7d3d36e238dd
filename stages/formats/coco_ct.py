"""COCO Camera Traps metadata: stream a (possibly multi-GB) file, keep only what selection needs.

The format (lila.science/coco-camera-traps): `{info, images[], categories[], annotations[]}`
with category 0 reserved for "empty", boxes as absolute `bbox` or normalised `bbox_relative`.
Keys may come in any order; NACTI lists images before annotations.
"""

from __future__ import annotations

import contextlib
import gc
import io
import multiprocessing
import os
import posixpath
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson

from stages.core.errors import CorruptMetadata, MetadataError
from stages.formats.archives import MemberOpener, single_member, unsafe_member
from stages.formats.jsonstream import iter_document

PARALLEL_MIN_BYTES = 64 << 20
SEP = "\x00"
NAME_FIELDS = ("common name", "common_name", "name", "species")


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


class Selector(Protocol):
    """What chooses images while the metadata streams by."""

    def categories(self, categories: list[dict]) -> set | None:
        """Return the category ids worth keeping annotations of (None: all)."""

    def select(self, meta: Metadata) -> set[str]:
        """Return the ids of the chosen images, once categories and annotations are read."""


def category_index(categories: list[dict]) -> dict[str, set]:
    """Map every lower-case common or scientific name of a category to its ids."""
    index: dict[str, set] = {}
    for cat in categories:
        for key in NAME_FIELDS:
            value = cat.get(key)
            if isinstance(value, str) and value.strip():
                index.setdefault(value.strip().lower(), set()).add(cat.get("id"))
    return index


def open_document(path: Path, max_bytes: int) -> tuple[MemberOpener, int]:
    """Check a metadata zip (or bare JSON); return an opener for its JSON and the JSON's size."""
    member, size = single_member(path, ".json", max_bytes)
    if member is None:
        with open(path, "rb") as fh:
            if not fh.read(64).lstrip().startswith(b"{"):
                raise CorruptMetadata(f"{Path(path).name}: neither a zip nor a JSON object")
    return MemberOpener(Path(path), member), size


def safe_relpath(name) -> str:
    """Return a metadata file_name as a safe relative POSIX path, or raise."""
    if not isinstance(name, str):
        raise MetadataError(f"file_name must be a string, got {name!r}")
    rel = name.replace("\\", "/")
    if ".." not in rel and ":" not in rel and "\x00" not in rel and "//" not in rel:
        if rel and rel[0] != "/" and rel[-1] != "/":
            return rel  # the common case, without splitting
    # The archive-member rule, and no empty segments either ("a//b", "a/").
    if unsafe_member(rel) or "" in rel.split("/"):
        raise MetadataError(f"unsafe file_name in metadata: {name!r}")
    return posixpath.normpath(rel)


def dimension(im: dict, key: str) -> int | None:
    """Return an image's width or height as an int, or raise on a non-number."""
    value = im.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MetadataError(f"image {im.get('id')!r}: {key} must be a number, got {value!r}")
    return int(value)


def _stream(source):
    """Open a fresh binary stream from a path, bytes, or a zero-argument callable."""
    if callable(source):
        return source()
    if isinstance(source, bytes | bytearray):
        return io.BytesIO(source)
    return open(source, "rb")


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


def _document(source, max_bytes: int | None, max_value_bytes: int | None):
    """Stream a metadata document, decoding images and annotations in batches."""
    # exact_integers off: ids and sizes are type-checked where they are used.
    with _stream(source) as fp:
        yield from iter_document(
            fp,
            {"images", "annotations"},
            max_bytes=max_bytes,
            max_value_bytes=max_value_bytes,
            exact_integers=False,
        )


def _image_batches(source, max_bytes: int | None, max_value_bytes: int | None):
    """Yield the batches of the images array, then stop reading the file."""
    in_images = False
    for key, kind, payload in _document(source, max_bytes, max_value_bytes):
        if key == "images":
            in_images = True
            if kind == "batch":
                yield payload
        elif in_images:
            return


def _spool_images(source, limits: tuple, ids_path: str, recs_path: str) -> int:
    """Write every image's id and record, one JSON line each, to two files."""
    n = 0
    with paused_gc(), open(ids_path, "wb") as fi, open(recs_path, "wb") as fr:
        for batch in _image_batches(source, *limits):
            try:
                ids = [orjson.dumps(str(d["id"])) for d in batch]
            except (KeyError, TypeError):
                raise MetadataError("an image lacks an id or is not an object") from None
            fi.write(b"\n".join(ids) + b"\n")
            fr.write(b"\n".join(map(orjson.dumps, batch)) + b"\n")
            n += len(ids)
    return n


def _spool_child(conn, source, limits: tuple, ids_path: str, recs_path: str) -> None:
    """Run the spool in the helper process; send back ("ok", n) or ("error", message)."""
    try:
        conn.send(("ok", _spool_images(source, limits, ids_path, recs_path)))
    except CorruptMetadata as exc:
        conn.send(("corrupt", str(exc)))
    except MetadataError as exc:
        conn.send(("error", str(exc)))
    except Exception as exc:  # any other failure still reaches the parent as a clear error
        conn.send(("error", f"metadata reader failed: {type(exc).__name__}: {exc}"))
    finally:
        conn.close()


class ImageSpool:
    """Read the images array in a second process while this one reads the annotations.

    Without it, a file that lists images before annotations (NACTI) needs a second pass over
    the images after selection; with it that pass runs on the other core, and this process
    only picks the selected lines from the spool (JSON lines on local disk).
    """

    def __init__(self, source, limits: tuple):
        self.dir = tempfile.mkdtemp(prefix="coco-ct-spool-")
        self.ids, self.recs = f"{self.dir}/ids.jsonl", f"{self.dir}/images.jsonl"
        # spawn, not fork: the caller may have threads (the downloader's) whose locks a
        # forked child would inherit held. The source must be picklable (a path, bytes or
        # a MemberOpener).
        ctx = multiprocessing.get_context("spawn")
        self.conn, child_end = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(
            target=_spool_child,
            args=(child_end, source, limits, self.ids, self.recs),
            name="coco-ct-spool",
            daemon=True,
        )
        self.proc.start()
        child_end.close()

    def pick(self, meta: Metadata, wanted: set[str]) -> None:
        """Wait for the spool, then keep the records of wanted images."""
        try:
            status, value = self.conn.recv()
        except EOFError:
            raise MetadataError("the metadata reader process died") from None
        if status == "corrupt":
            raise CorruptMetadata(value)
        if status != "ok":
            raise MetadataError(value)
        keys = {orjson.dumps(i) + b"\n" for i in wanted}
        # Both files in step, line by line: memory stays flat whatever the dataset size.
        with open(self.ids, "rb") as fi, open(self.recs, "rb") as fr:
            for key, line in zip(fi, fr, strict=True):
                if key in keys:
                    d = orjson.loads(line)
                    meta.images[str(d["id"])] = d

    def close(self) -> None:
        """Stop the helper if still running and remove the spool."""
        if self.proc.is_alive():
            self.proc.terminate()  # not needed any more, or this process failed
        self.proc.join()
        self.conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def read_metadata(
    source,
    selector: Selector,
    max_bytes: int | None = None,
    *,
    max_value_bytes: int | None = None,
    size: int | None = None,
    parallel: bool | None = None,
) -> tuple[Metadata, set[str]]:
    """Stream a COCO Camera Traps JSON and select images, without loading it whole.

    `source` is a path, bytes, or a callable opening a fresh binary stream. `parallel`
    (default: when `size` or the file's size is at least 64 MiB) reads the images array in a
    second process; results are the same either way. Returns the metadata (with records of
    the chosen images only) and the chosen ids.
    """
    if parallel is None:
        if size is None and isinstance(source, str | Path):
            size = os.path.getsize(source)
        parallel = (size or 0) >= PARALLEL_MIN_BYTES
    limits = (max_bytes, max_value_bytes)
    spool = ImageSpool(source, limits) if parallel else None
    try:
        with paused_gc():
            return _read_metadata(source, selector, limits, spool)
    finally:
        if spool is not None:
            spool.close()


def _read_metadata(
    source, selector: Selector, limits: tuple, spool: ImageSpool | None
) -> tuple[Metadata, set[str]]:
    """Read categories and annotations, select, and keep the selected images' records.

    One pass reads categories and annotations; image records are kept only for selected
    images: inline when the file lists images last, else (NACTI lists them first) from the
    spool a helper process wrote meanwhile, or from a second pass over the images array.
    """
    meta = Metadata()
    chosen: set[str] | None = None
    seen: set[str] = set()
    images_done = False
    current = None
    wanted_cats: set | None = None
    for key, kind, payload in _document(source, *limits):
        if key != current:
            if current is not None:
                seen.add(current)
            current = key
        if key == "images" and kind == "batch":
            meta.n_images += len(payload)
            if chosen is None and {"categories", "annotations"} <= seen:
                _unpark(meta)
                chosen = selector.select(meta)
            if chosen is not None:
                _take_images(meta, payload, chosen)  # images listed last: filter inline
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
                wanted_cats = selector.categories(payload)
        elif key == "info" and kind == "value":
            meta.info = payload if isinstance(payload, dict) else {}
        elif key in ("images", "annotations") and kind == "value":
            raise MetadataError(f"{key} must be a list")
    if not meta.categories:
        raise MetadataError("metadata has no categories")
    if chosen is None:
        _unpark(meta)
        chosen = selector.select(meta)
    if not images_done and chosen:
        if spool is not None:
            spool.pick(meta, chosen)
        else:
            # A second pass, stopping after the images array. Holding every image record
            # from the first pass instead costs ~1 GB more on NACTI.
            for batch in _image_batches(source, *limits):
                _take_images(meta, batch, chosen)
    missing = chosen - meta.images.keys()
    if missing:
        raise MetadataError(
            f"{len(missing)} annotated image id(s) not in images, e.g. {min(missing)!r}"
        )
    return meta, chosen
