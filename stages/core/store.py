"""Item store: a Parquet manifest plus payloads in deterministic tar shards."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from stages.core.errors import StoreError
from stages.core.files import atomic_path, part_path

if TYPE_CHECKING:
    from stages.core.executor import Executor

MANIFEST = "manifest.parquet"
SHARD_DIR = "shards"
STATUSES = ("ok", "failed", "missing", "corrupt")

BOX = pa.struct(
    [
        ("label", pa.string()),
        ("x", pa.float64()),
        ("y", pa.float64()),
        ("w", pa.float64()),
        ("h", pa.float64()),
    ]
)
SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("source", pa.string()),
        ("source_id", pa.string()),
        ("url", pa.string()),
        ("sha256", pa.string()),
        ("bytes", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("labels", pa.list_(pa.string())),
        ("label_ids", pa.list_(pa.int32())),
        ("boxes", pa.list_(BOX)),
        ("split", pa.string()),  # train/val/test..., from clean-annotations on (core.splits)
        ("status", pa.string()),
        ("reason", pa.string()),
        ("shard", pa.string()),
        ("offset", pa.int64()),
        ("meta", pa.string()),
    ]
)
SAFE = re.compile(r"[^A-Za-z0-9._-]+")
CLASSES_KEY = b"classes"


@dataclass
class Row:
    """One item of a stage's output."""

    item_id: str
    source: str
    source_id: str
    url: str = ""
    sha256: str | None = None
    bytes: int | None = None
    width: int | None = None
    height: int | None = None
    labels: list[str] = field(default_factory=list)
    label_ids: list[int] | None = None
    boxes: list[dict] = field(default_factory=list)
    status: str = "ok"
    reason: str = ""
    shard: str | None = None
    offset: int | None = None
    meta: dict = field(default_factory=dict)
    split: str | None = None  # set by clean-annotations (stages.core.splits)

    def to_record(self) -> dict:
        """Return the row as a manifest record."""
        rec = self.__dict__.copy()
        rec["meta"] = json.dumps(self.meta, sort_keys=True, separators=(",", ":"))
        return rec

    @classmethod
    def from_record(cls, rec: dict) -> Row:
        """Build a row from a manifest record."""
        rec = dict(rec)
        rec["meta"] = json.loads(rec["meta"] or "{}")
        rec["labels"] = list(rec["labels"] or [])
        rec["boxes"] = [dict(b) for b in rec["boxes"] or []]
        return cls(**rec)


def payload_ext(row: Row) -> str:
    """Return the file extension of a row's payload: as recorded, or from its URL's path."""
    if row.meta.get("ext"):
        return row.meta["ext"]
    return Path(row.url.split("?")[0].split("#")[0]).suffix.lower()


def safe_name(text: str, fallback: str) -> str:
    """Return text with each run of characters unsafe in a file name as `_` (never empty)."""
    return SAFE.sub("_", text).strip("._") or fallback


def member_name(item_id: str, ext: str) -> str:
    """Return a tar member name for an item: readable, unique, within ustar's 100 chars."""
    safe = safe_name(item_id, "item")
    digest = hashlib.sha1(item_id.encode()).hexdigest()[:10]
    ext = SAFE.sub("_", ext)[:10]  # from a remote URL: keep it tame
    return f"{safe[-70:]}-{digest}{ext}"


def file_stem(item_id: str) -> str:
    """Return an item's export file name (no extension): its id if safe, else id + digest."""
    if safe_name(item_id, "") == item_id and len(item_id) <= 100:
        return item_id
    return member_name(item_id, "")


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    """Return a header with fixed metadata, so shard bytes depend on content only."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def overflows(used: int, size: int, limit: int) -> bool:
    """Tell whether a member of `size` bytes starts a new shard: the shard holds something
    and its header (512 bytes) plus the data would pass the limit (the one cut rule)."""
    return bool(used) and used + size + tarfile.BLOCKSIZE > limit


class ShardWriter:
    """Pack payloads into size-bounded deterministic tar shards, recording offsets."""

    def __init__(self, out_dir: Path, shard_bytes: int, prefix: str = "shard"):
        self.dir = Path(out_dir) / SHARD_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.limit = max(int(shard_bytes), 1)
        self.prefix = prefix
        self.index = -1
        self.tar: tarfile.TarFile | None = None
        self.fh = None
        self.path: Path | None = None
        self.size = 0

    def _open(self) -> None:
        self._close()
        self.index += 1
        self.path = self.dir / f"{self.prefix}-{self.index:05d}.tar"
        self.fh = open(part_path(self.path), "wb")
        self.tar = tarfile.open(fileobj=self.fh, mode="w", format=tarfile.USTAR_FORMAT)
        self.size = 0

    def _close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.fh.close()
            # Only complete shards get their final name.
            os.replace(part_path(self.path), self.path)
        self.tar = self.fh = None

    def abort(self) -> None:
        """Drop the shard being written: a shard that fails mid-write never gets its name."""
        if self.fh is not None:
            self.fh.close()
            part_path(self.path).unlink(missing_ok=True)
        self.tar = self.fh = None

    def add(self, name: str, fileobj, size: int) -> tuple[str, int]:
        """Append one payload; return (shard path relative to the store, data offset)."""
        if self.tar is None or overflows(self.size, size, self.limit):
            self._open()
        self.tar.addfile(_tarinfo(name, size), fileobj)
        self.size = self.fh.tell()
        # The data ends the member, padded to whole 512-byte blocks (the header is not rebuilt).
        offset = self.size - -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        return f"{SHARD_DIR}/{self.path.name}", offset

    def close(self) -> None:
        """Finish the last shard."""
        self._close()


def write_manifest(out_dir: Path, rows: Iterable[Row], classes: list[str] | None = None) -> Path:
    """Write the manifest sorted by item id, deterministically, atomically.

    `classes`, the class names in id order, are recorded in the file's metadata, so the
    stages after this one use the same ids whether conf listed them or the data gave them.
    """
    records = sorted((r.to_record() for r in rows), key=lambda r: r["item_id"])
    ids = [r["item_id"] for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate item ids in manifest")
    schema = SCHEMA
    if classes is not None:
        schema = SCHEMA.with_metadata({CLASSES_KEY: json.dumps(list(classes))})
    table = pa.Table.from_pylist(records, schema=schema)
    path = Path(out_dir) / MANIFEST
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=False, use_dictionary=True)
    return path


def shard_group(row: Row) -> str:
    """Return the shard sequence an item is packed in: its first label."""
    return row.labels[0] if row.labels else ""


def group_prefix(group: str) -> str:
    """Return the file name prefix of a group's shards: readable, unique, short."""
    digest = hashlib.sha1(group.encode()).hexdigest()[:8]
    return f"{safe_name(group, 'none')[:40]}-{digest}"


class Packer:
    """Pack payloads group by group, each group (class) into its own sequence of shards.

    Items come in group order and, within a group, in the selection's rank order, so raising
    a class's cap appends to its last shard, and adding a class adds shards of its own: the
    other shards keep their bytes (and DVC moves only what changed). Shard names depend on
    the group and position only, so a fresh build and an incremental one are byte-identical.
    """

    def __init__(self, out_dir: Path, shard_bytes: int):
        self.out_dir, self.shard_bytes = Path(out_dir), shard_bytes
        self.group: str | None = None
        self.writer: ShardWriter | None = None
        self.done: set[str] = set()

    def add(self, group: str, name: str, fileobj, size: int) -> tuple[str, int]:
        """Append one payload to its group's shards; return (shard path, data offset)."""
        if group != self.group or self.writer is None:
            if group in self.done:
                raise ValueError(f"items of group {group!r} are not contiguous")
            self.close()
            self.group, self.writer = (
                group,
                ShardWriter(self.out_dir, self.shard_bytes, group_prefix(group)),
            )
        return self.writer.add(name, fileobj, size)

    def close(self) -> None:
        """Finish the current group's last shard."""
        if self.writer is not None:
            self.writer.close()
            self.done.add(self.group)
        self.writer = None

    def abort(self) -> None:
        """Drop the shard being written."""
        if self.writer is not None:
            self.writer.abort()
        self.writer = None


def item_rank(row: Row) -> bytes:
    """Return the default order of a group's items: by id."""
    return row.item_id.encode()


def layout_key(rank: Callable[[Row], bytes]) -> Callable[[Row], tuple]:
    """Return the sort key that lays items out for a Packer: by class, then by `rank`."""
    return lambda row: (shard_group(row), rank(row), row.item_id)


class PayloadMismatch(StoreError):
    """Raise when a payload's bytes no longer match the sha256 recorded for it."""

    def __init__(self, message: str, path: Path | str):
        super().__init__(message)
        self.path = path

    def __reduce__(self):  # raised on a Dask worker, re-raised by the driver
        return type(self), (str(self), self.path)


class HashingReader:
    """A file reader that hashes what is read from it (what tarfile packs)."""

    def __init__(self, fh):
        self.fh, self.hash = fh, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        """Read and hash up to n bytes."""
        data = self.fh.read(n)
        self.hash.update(data)
        return data

    def hexdigest(self) -> str:
        """Return the sha256 of the bytes read so far."""
        return self.hash.hexdigest()


@dataclass(frozen=True)
class Member:
    """One payload to pack: its member name, where its bytes are, and what they must be."""

    name: str
    src: str
    size: int
    sha256: str | None
    item_id: str


@dataclass(frozen=True)
class ShardJob:
    """One shard to write (a task: picklable, and the same bytes however often it runs)."""

    path: str
    members: tuple[Member, ...]


def _padded(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def plan_shards(
    out_dir: Path, rows: list[Row], members: list[Member], shard_bytes: int
) -> list[ShardJob]:
    """Cut rows (in layout order, each with its Member) into each class's size-bounded shards,
    setting every row's shard and offset; return the shards to write.

    The cut depends on the payload sizes alone, as a ShardWriter would make it: a member is a
    512-byte header then its data padded to whole blocks, and a shard takes members until the
    next would pass `shard_bytes`.
    """
    limit, jobs = max(int(shard_bytes), 1), []
    group, index, pos, current = None, -1, 0, []

    def flush() -> None:
        if current:
            jobs.append(ShardJob(str(Path(out_dir).absolute() / path), tuple(current)))

    for row, member in zip(rows, members, strict=True):
        g = shard_group(row)
        if g != group:
            flush()
            group, index, pos, current = g, -1, 0, []
        if index < 0 or overflows(pos, member.size, limit):
            flush()
            index, pos, current = index + 1, 0, []
            path = f"{SHARD_DIR}/{group_prefix(g)}-{index:05d}.tar"
        row.shard, row.offset = path, pos + tarfile.BLOCKSIZE
        pos += tarfile.BLOCKSIZE + _padded(member.size)
        current.append(member)
    flush()
    return jobs


def pack_shard(job: ShardJob) -> int:
    """Write one shard under a temporary name, checking each payload, then publish it;
    return its size. Raise PayloadMismatch for bytes that changed since they were verified."""
    path = Path(job.path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        tar = tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT)
        for m in job.members:
            try:
                src = open(m.src, "rb")
            except FileNotFoundError:
                msg = f"{m.item_id}: {m.src} vanished: run the stage again"
                raise PayloadMismatch(msg, m.src) from None
            with src:
                if os.fstat(src.fileno()).st_size != m.size:
                    raise PayloadMismatch(
                        f"{m.item_id}: {m.src} is not the size recorded for it: run the stage "
                        "again",
                        m.src,
                    )
                reader = HashingReader(src)
                tar.addfile(_tarinfo(m.name, m.size), reader)
            if m.sha256 is not None and reader.hexdigest() != m.sha256:
                raise PayloadMismatch(
                    f"{m.item_id}: the bytes packed from {m.src} do not match its sha256 "
                    "(changed since it was verified): run the stage again",
                    m.src,
                )
        tar.close()
        size = fh.tell()
    return size


def write_store(
    out_dir: Path,
    rows: Iterable[Row],
    payload: Callable[[Row], Path | None],
    shard_bytes: int,
    ext: Callable[[Row], str] = payload_ext,
    classes: list[str] | None = None,
    rank: Callable[[Row], bytes] = item_rank,
    *,
    executor: Executor,
) -> list[Row]:
    """Pack each row's payload (a file path, or None for no payload) and write the manifest.

    Payloads are laid out by class, then by `rank` (the source's selection order; see Packer).
    Each shard is a task of `executor`; its bytes depend on the rows alone.
    """
    out_dir = Path(out_dir)
    (out_dir / SHARD_DIR).mkdir(parents=True, exist_ok=True)  # present even if none is packed
    rows = sorted(rows, key=layout_key(rank))
    packed, members = [], []
    for row in rows:
        src = payload(row) if row.status == "ok" else None
        if src is None:
            row.shard, row.offset = None, None
            continue
        src = os.path.abspath(src)
        size = row.bytes if row.bytes is not None else os.path.getsize(src)
        row.bytes = size
        name = member_name(row.item_id, ext(row))
        members.append(Member(name, src, size, row.sha256, row.item_id))
        packed.append(row)
    jobs = plan_shards(out_dir, packed, members, shard_bytes)
    try:
        for _ in executor.map(pack_shard, jobs, kind="thread"):
            pass
    finally:
        # A task's worker killed mid-write leaves its temporary file: never part of a store.
        for leftover in (out_dir / SHARD_DIR).glob("*.part"):
            leftover.unlink(missing_ok=True)
    write_manifest(out_dir, rows, classes)
    return rows


class Segment(io.RawIOBase):
    """A read-only, seekable view of one payload inside a shard file."""

    def __init__(self, fh, offset: int, size: int, owns: bool = False):
        super().__init__()
        self.fh, self.start, self.size, self.pos = fh, offset, size, 0
        self.owns = owns  # close the shard file with this view

    def close(self) -> None:
        if self.owns and not self.closed:
            self.fh.close()
        super().close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = min(max(base + pos, 0), self.size)
        return self.pos

    def readinto(self, buf) -> int:
        n = min(len(buf), self.size - self.pos)
        if n <= 0:
            return 0
        self.fh.seek(self.start + self.pos)
        got = self.fh.readinto(memoryview(buf)[:n])
        self.pos += got
        return got


class Store:
    """Read a store: rows from the manifest, single payloads by id via shard offsets."""

    def __init__(self, root: Path):
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise StoreError(f"{path} not found: run the stage that writes {self.root} first")
        self.table = pq.read_table(path)
        self._rows: list[Row] | None = None
        self._by_id: dict[str, Row] | None = None

    @property
    def classes(self) -> list[str] | None:
        """Return the class names in id order recorded by the stage that wrote the store."""
        raw = (self.table.schema.metadata or {}).get(CLASSES_KEY)
        if raw is None:
            return None
        try:
            names = json.loads(raw)
        except ValueError:
            names = None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise StoreError(f"{self.root / MANIFEST}: malformed class list in its metadata")
        return names

    def rows(self) -> list[Row]:
        """Return every row, sorted by item id."""
        if self._rows is None:
            self._rows = [Row.from_record(r) for r in self.table.to_pylist()]
        return self._rows

    def row(self, item_id: str) -> Row:
        """Return one row by id."""
        if self._by_id is None:
            self._by_id = {r.item_id: r for r in self.rows()}
        return self._by_id[item_id]

    def shard_path(self, row: Row) -> Path:
        """Return a row's shard path, which may lie in an upstream store."""
        return Path(os.path.abspath(self.root / row.shard))

    def read(self, item_id_or_row: str | Row) -> bytes:
        """Return one item's payload bytes without unpacking its shard."""
        row = item_id_or_row if isinstance(item_id_or_row, Row) else self.row(item_id_or_row)
        if row.shard is None:
            raise KeyError(f"{row.item_id} has no payload (status {row.status})")
        return read_payload(self.shard_path(row), row)

    def located(self, rows: Iterable[Row]) -> list[Row]:
        """Return copies of rows whose shard is an absolute path: readable by read_payload
        anywhere the store's directory is (a task on a Dask worker)."""
        return [
            dataclasses.replace(r, shard=str(self.shard_path(r))) if r.shard else r for r in rows
        ]

    def open(self, row: Row) -> io.BufferedReader:
        """Return a reader of one item's payload, read in place from its shard."""
        if row.shard is None:
            raise KeyError(f"{row.item_id} has no payload (status {row.status})")
        try:
            fh = open(self.shard_path(row), "rb")
        except OSError as exc:
            raise StoreError(f"cannot read {row.shard}: {exc.strerror}") from None
        return io.BufferedReader(Segment(fh, row.offset, row.bytes, owns=True))

    def iter_payloads(self, rows: Iterable[Row] | None = None) -> Iterator[tuple[Row, bytes]]:
        """Yield (row, bytes) for rows with payloads, reading each shard sequentially."""
        rows = [r for r in (rows if rows is not None else self.rows()) if r.shard is not None]
        rows.sort(key=lambda r: (r.shard, r.offset))
        fh, current = None, None
        try:
            for row in rows:
                if row.shard != current:
                    if fh:
                        fh.close()
                    fh, current = open(self.shard_path(row), "rb"), row.shard
                fh.seek(row.offset)
                yield row, fh.read(row.bytes)
        finally:
            if fh:
                fh.close()


def read_payload(shard: Path | str, row: Row) -> bytes:
    """Return one item's payload bytes from its shard file, without unpacking it."""
    try:
        with open(shard, "rb") as fh:
            fh.seek(row.offset)
            data = fh.read(row.bytes)
    except OSError as exc:
        raise StoreError(f"cannot read {row.shard}: {exc.strerror}") from None
    if len(data) != row.bytes:
        raise StoreError(f"{row.shard} is truncated at item {row.item_id}")
    return data


def frames_by_clip(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Group frame rows (extract-frames output) by clip, each clip's frames in order."""
    clips: dict[str, list[Row]] = {}
    for row in rows:
        clips.setdefault(row.meta["clip"], []).append(row)
    for frames in clips.values():
        frames.sort(key=lambda r: r.meta["frame"])
    return clips


def rebase(rows: Iterable[Row], from_root: Path, to_root: Path) -> list[Row]:
    """Point rows' shard paths, relative to from_root, at the same files relative to to_root."""
    # Lexical paths, never resolve(): with DVC's symlink cache a shard file links into the
    # cache, and the manifest must name the workspace path on every machine.
    out = []
    to_root = os.path.abspath(to_root)
    for row in rows:
        if row.shard is not None:
            target = os.path.abspath(Path(from_root) / row.shard)
            row.shard = Path(os.path.relpath(target, to_root)).as_posix()
        out.append(row)
    return out
