"""Item store: deterministic shards, bounded size, addressable items."""

import hashlib
import os
import tarfile

import pyarrow.parquet as pq
import pytest

from stages.core.executor import LocalExecutor
from stages.core.selection import ranker
from stages.core.store import (
    Packer,
    PayloadMismatch,
    Row,
    Store,
    group_prefix,
    member_name,
    rebase,
    write_manifest,
    write_store,
)


def make_rows(tmp_path, n=30, size=3000):
    blobs = tmp_path / "blobs"
    blobs.mkdir(exist_ok=True)
    rows, paths = [], {}
    for i in range(n):
        data = hashlib.sha256(str(i).encode()).digest() * (size // 32 + i)
        p = blobs / f"{i}.bin"
        p.write_bytes(data)
        item = f"ds/part{i % 3}/img{i:03d}"
        paths[item] = p
        rows.append(
            Row(
                item_id=item,
                source="t",
                source_id=str(i),
                url=f"http://h/{i}.jpg",
                sha256=hashlib.sha256(data).hexdigest(),
                labels=["a"],
                status="ok",
                boxes=[{"label": "a", "x": 1.0, "y": 2.0, "w": 3.0, "h": 4.0}],
            )
        )
    rows.append(
        Row(item_id="ds/zz-missing", source="t", source_id="m", status="missing", reason="http 404")
    )
    return rows, paths


def build(tmp_path, name, rows, paths, shard_bytes=20_000, order=None):
    out = tmp_path / name
    rows = [Row.from_record(r.to_record()) for r in (order or rows)]
    write_store(out, rows, lambda r: paths[r.item_id], shard_bytes, executor=LocalExecutor(2))
    return out


def digests(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_rows_give_same_bytes_whatever_the_order(tmp_path):
    rows, paths = make_rows(tmp_path)
    a = build(tmp_path, "a", rows, paths)
    os.utime(paths[rows[0].item_id], (1, 1))  # mtimes must not matter
    b = build(tmp_path, "b", rows, paths, order=list(reversed(rows)))
    assert digests(a) == digests(b)
    assert len(list((a / "shards").glob("*.tar"))) > 1


def test_shards_are_bounded_and_normalised(tmp_path):
    rows, paths = make_rows(tmp_path)
    out = build(tmp_path, "s", rows, paths, shard_bytes=20_000)
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tf:
            members = tf.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert all(
            m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.mode == 0o644 and m.uname == ""
            for m in members
        )
        # A shard holds one item over the bound, or stays under it.
        assert len(members) == 1 or shard.stat().st_size <= 20_000 + 10240
    assert not list(out.rglob("*.part"))


def test_items_read_by_id_match_payloads(tmp_path):
    rows, paths = make_rows(tmp_path)
    out = build(tmp_path, "r", rows, paths)
    store = Store(out)
    for item, path in paths.items():
        assert store.read(item) == path.read_bytes()
    missing = store.row("ds/zz-missing")
    assert missing.status == "missing" and missing.shard is None and missing.reason == "http 404"
    seen = {row.item_id: data for row, data in store.iter_payloads()}
    assert seen == {k: p.read_bytes() for k, p in paths.items()}
    table = pq.read_table(out / "manifest.parquet")
    assert table.column("item_id").to_pylist() == sorted(table.column("item_id").to_pylist())
    assert store.row(rows[0].item_id).boxes[0] == {
        "label": "a",
        "x": 1.0,
        "y": 2.0,
        "w": 3.0,
        "h": 4.0,
    }


def test_rebased_manifest_reads_upstream_shards(tmp_path):
    rows, paths = make_rows(tmp_path, n=5)
    up = build(tmp_path, "fetch", rows, paths)
    down = tmp_path / "clean"
    down.mkdir()
    kept = [r for r in Store(up).rows() if r.status == "ok"][:2]
    write_manifest(down, rebase(kept, up, down))
    store = Store(down)
    assert store.row(kept[0].item_id).shard.startswith("../fetch/shards/")
    assert store.read(kept[0].item_id) == paths[kept[0].item_id].read_bytes()


def test_member_names_are_safe_and_unique():
    a = member_name("NACTI/../../etc/passwd", ".jpg")
    assert "/" not in a and not a.startswith(".") and len(a) < 100
    assert member_name("x/" + "y" * 300, ".jpg") != member_name("x/" + "y" * 299, ".jpg")


def test_a_shard_that_fails_mid_write_never_gets_its_final_name(tmp_path):
    src = tmp_path / "blob.jpg"
    src.write_bytes(b"\xff\xd8" + b"x" * 5000 + b"\xff\xd9")
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    rows = [
        Row(f"t/{i}", "t", str(i), url=f"http://h/{i}.jpg", sha256=good if i != 4 else "0" * 64)
        for i in range(6)
    ]
    # Shards of two items each; t/4's recorded hash is not its bytes: shard 2 fails mid-write.
    with pytest.raises(PayloadMismatch, match="t/4"):
        write_store(
            tmp_path / "out", rows, lambda row: src, shard_bytes=12_000, executor=LocalExecutor(2)
        )
    shards = tmp_path / "out" / "shards"
    first, second = (f"{group_prefix('')}-{i:05d}.tar" for i in (0, 1))
    assert sorted(p.name for p in shards.iterdir()) == [first, second]  # no part file either
    with tarfile.open(shards / first) as tar:
        assert len(tar.getmembers()) == 2
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_rebase_keeps_workspace_paths_when_shards_are_symlinks(tmp_path):
    # DVC's `cache.type symlink` turns every shard into a link into the cache: the clean
    # manifest must still name ../fetch/shards/..., the same on every machine.
    rows, paths = make_rows(tmp_path, n=3)
    write_store(
        tmp_path / "fetch", rows, lambda r: paths.get(r.item_id), 1 << 20, executor=LocalExecutor(2)
    )
    name = f"{group_prefix('a')}-00000.tar"
    shard = tmp_path / "fetch" / "shards" / name
    cache = tmp_path / "dvc-cache" / "ab" / "cdef"
    cache.parent.mkdir(parents=True)
    os.replace(shard, cache)
    shard.symlink_to(cache)
    (tmp_path / "clean").mkdir()
    moved = rebase(Store(tmp_path / "fetch").rows(), tmp_path / "fetch", tmp_path / "clean")
    assert {r.shard for r in moved} == {f"../fetch/shards/{name}", None}
    write_manifest(tmp_path / "clean", moved)
    first = next(r for r in moved if r.shard)
    assert Store(tmp_path / "clean").read(first.item_id) == Store(tmp_path / "fetch").read(first)


def layout_rows(classes, per_class, cap=None, size=600):
    """Rows of classes (name -> pool size) whose first `cap` items by seeded rank are taken."""
    rank = ranker(7)
    rows = []
    for name in classes:
        pool = sorted((f"{name}/{i:04d}" for i in range(per_class[name])), key=rank)
        for item in pool[:cap]:
            data = hashlib.sha256(item.encode()).digest() * (size // 32)
            rows.append((Row(item, "t", item, labels=[name], status="ok"), data))
    return rows


def pack(tmp_path, name, rows):
    blobs = {}
    for row, data in rows:
        path = tmp_path / "blobs" / hashlib.sha1(row.item_id.encode()).hexdigest()
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        blobs[row.item_id] = path
    fresh = [Row.from_record(r.to_record()) for r, _ in rows]
    rank = ranker(7)
    write_store(
        tmp_path / name,
        fresh,
        lambda r: blobs[r.item_id],
        8_000,
        rank=lambda r: rank(r.item_id),
        executor=LocalExecutor(2),
    )
    return digests(tmp_path / name / "shards")


def test_a_raised_cap_or_a_new_class_leaves_the_other_shards_byte_identical(tmp_path):
    pools = {"deer": 120, "elk": 120, "fox": 120}
    before = pack(tmp_path, "v1", layout_rows(["deer", "elk", "fox"], pools, cap=53))
    # Raising the cap appends each class's next items by rank: each class's last shard
    # changes and new ones follow; every shard before it keeps its bytes.
    raised = pack(tmp_path, "v2", layout_rows(["deer", "elk", "fox"], pools, cap=60))
    changed = {k for k in before if raised.get(k) != before[k]}
    per_class = {c: sorted(k for k in before if k.startswith(group_prefix(c))) for c in pools}
    assert all(len(v) >= 4 for v in per_class.values())
    assert changed == {v[-1] for v in per_class.values()}
    # A new class packs into shards of its own.
    pools["owl"] = 40
    added = pack(tmp_path, "v3", layout_rows(["deer", "elk", "fox", "owl"], pools, cap=53))
    assert {k: v for k, v in added.items() if k in before} == before
    assert all(k.startswith(group_prefix("owl")) for k in set(added) - set(before))
    # Shards stay bounded: the limit plus one item and tar's end-of-archive record padding.
    sizes = [(tmp_path / "v3" / "shards" / k).stat().st_size for k in added]
    assert max(sizes) <= 8_000 + 1024 + tarfile.RECORDSIZE


def test_the_packer_refuses_a_group_that_is_not_contiguous(tmp_path):
    import io

    packer = Packer(tmp_path, 1 << 20)
    packer.add("a", "x", io.BytesIO(b"1"), 1)
    packer.add("b", "y", io.BytesIO(b"2"), 1)
    with pytest.raises(ValueError, match="not contiguous"):
        packer.add("a", "z", io.BytesIO(b"3"), 1)
    packer.abort()


def test_a_payload_whose_bytes_changed_since_verification_is_refused(tmp_path):
    from stages.core.errors import StoreError

    rows, paths = make_rows(tmp_path, n=3)
    paths[rows[1].item_id].write_bytes(b"replaced after it was verified")
    with pytest.raises(StoreError, match="do not match its sha256"):
        write_store(
            tmp_path / "out",
            rows,
            lambda r: paths.get(r.item_id),
            1 << 20,
            executor=LocalExecutor(2),
        )
    assert not (tmp_path / "out" / "manifest.parquet").exists()
