"""How much of a store changes as a dataset grows, what `dvc push` moves, and the disk one
built source costs.

On a 100,000-item store laid out as the fetch stage lays it out (store.write_store, LILA's
selection and rank), three edits: (a) one class's cap raised so 1% more items are selected,
(b) a class holding 1% of the items added, (c) 1% scattered upstream additions. For each, the
fraction of shard bytes not byte-identical to a shard before, beside the same edits under the
previous layout (one sequence sorted by item id) in the same run; for (a), the fraction of the
store's bytes `dvc push` sends to a local remote. Then a real fetch of the LILA stand-in into a
DVC repo: workspace + DVC cache + download cache on disk over its payload bytes, with the
project's settings and with the previous ones (cache.type copy, keep_cache true).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from _common import ROOT, bench_dir, dvc_env, run, tree_files

from stages.core.executor import LocalExecutor
from stages.core.selection import labels_of, pick
from stages.core.store import (
    Row,
    ShardWriter,
    member_name,
    payload_ext,
    write_manifest,
    write_store,
)
from stages.sources.lila import SOURCE as LILA

SEED = 0
CLASSES = [f"c{k:02d}" for k in range(10)]
CAPPED = "c03"  # the class whose cap (a) raises


def image_id(key: str) -> str:
    """Return an image id that, like a camera-trap file name, says nothing of its class."""
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def pool(name: str, n: int, tag: str = "") -> set[str]:
    """Return n image ids of a class."""
    return {image_id(f"{name}/{tag}{i}") for i in range(n)}


def universe(n: int) -> dict[str, set[str]]:
    """Return image ids per class: n/10 per class, plus n/100 more in the capped class's pool."""
    pools = {c: pool(c, n // len(CLASSES)) for c in CLASSES}
    pools[CAPPED] |= pool(CAPPED, n // 100, "x")
    return pools


def select(pools: dict[str, set[str]], names: list[str], caps: dict[str, int]) -> list[Row]:
    """Select with LILA's shared ranking and caps; return rows as LILA's fetch makes them."""
    picked = pick(pools, names, seed=SEED, cap=None, caps=caps, byte_budget=None, est_bytes=0)
    labels, _ = labels_of(pools, names, picked.chosen)
    return [
        Row(f"T/{i}", "lila", i, url=f"http://h/{i}.jpg", labels=labels[i], status="ok")
        for i in sorted(labels)
    ]


def blob(root: Path, image_id: str, mean: int) -> Path:
    """Return the payload file of an image (deterministic bytes, size mean +- 25%)."""
    digest = hashlib.sha256(image_id.encode()).digest()
    path = root / digest.hex()[:2] / f"{digest.hex()}.jpg"
    if not path.exists():
        size = mean * 3 // 4 + int.from_bytes(digest[:4], "big") % (mean // 2)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((digest * (size // 32 + 1))[:size])
    return path


def build(out: Path, rows: list[Row], blobs: Path, mean: int, shard_bytes: int) -> None:
    """Write a store the way the fetch stage does (grouped by class, in selection rank)."""
    rows = [dataclasses.replace(r, sha256=None) for r in rows]
    rank = LILA.rank(SimpleNamespace(fetch=SimpleNamespace(seed=SEED)))
    write_store(
        out,
        rows,
        lambda r: blob(blobs, r.source_id, mean),
        shard_bytes,
        rank=rank,
        executor=LocalExecutor(2),
    )


def build_by_id(out: Path, rows: list[Row], blobs: Path, mean: int, shard_bytes: int) -> None:
    """Write a store the previous way: one sequence of shards in item id order (the baseline)."""
    writer = ShardWriter(out, shard_bytes)
    for row in sorted(rows, key=lambda r: r.item_id):
        src = blob(blobs, row.source_id, mean)
        with open(src, "rb") as fh:
            name = member_name(row.item_id, payload_ext(row))
            row.shard, row.offset = writer.add(name, fh, os.path.getsize(src))
    writer.close()
    write_manifest(out, rows)


def shard_digests(store: Path) -> dict[str, tuple[str, int]]:
    """Map each shard's name to (sha256, size)."""
    out = {}
    for rel, path in tree_files(store / "shards").items():
        out[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size)
    return out


def rewrite_fraction(before: Path, after: Path) -> tuple[float, int, int]:
    """Return the share of `after`'s shard bytes whose shard is not in `before` (by content),
    with the counts of shards rewritten and in all."""
    old = {digest for digest, _ in shard_digests(before).values()}
    new = shard_digests(after)
    changed = [size for digest, size in new.values() if digest not in old]
    total = sum(size for _, size in new.values())
    return sum(changed) / total, len(changed), len(new)


def project_cache_type() -> str:
    """Return the cache.type the project's .dvc/config sets."""
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "config", "cache.type"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "copy"


def dvc_repo(path: Path, env: dict, cache_type: str, remote: Path | None = None) -> None:
    """Make a git + DVC repo with the given cache type (and a local remote)."""
    path.mkdir(parents=True)
    run(["git", "init", "-q"], path, env)
    run(["dvc", "init", "-q"], path, env)
    run(["dvc", "config", "cache.type", cache_type], path, env)
    if remote is not None:
        run(["dvc", "remote", "add", "-d", "r", str(remote)], path, env)


def disk_bytes(*roots: Path) -> int:
    """Return the bytes of the regular files under roots, each inode once (hard links)."""
    seen, total = set(), 0
    for root in roots:
        for path in tree_files(root).values():
            st = path.lstat()
            if path.is_symlink() or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def push_fraction(tmp: Path, v1: Path, v2: Path) -> tuple[float, int]:
    """Push v1 then v2 of a store from one repo; return v2's push bytes over its size."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = dvc_env(tmp)
    repo, remote = tmp / "push-repo", tmp / "push-remote"
    dvc_repo(repo, env, project_cache_type(), remote)
    os.replace(v1, repo / "store")
    run(["dvc", "add", "-q", "store"], repo, env)
    run(["dvc", "push", "-q"], repo, env)
    sent_before = disk_bytes(remote)
    run(["rm", "-rf", str(repo / "store")], repo, env)
    os.replace(v2, repo / "store")
    run(["dvc", "add", "-q", "store"], repo, env)
    run(["dvc", "push", "-q"], repo, env)
    sent = disk_bytes(remote) - sent_before
    return sent / disk_bytes(repo / "store"), sent


def footprint(tmp: Path, n_images: int, cache_type: str, keep_cache: bool) -> tuple[float, int]:
    """Fetch the LILA stand-in into a DVC repo; return disk bytes over payload bytes."""
    from stages.fetch import fetch
    from stages.pipeline.compose import group_defaults, source_defaults
    from standins.lila import LilaStandin, generate_dataset

    standin = tmp / "standin"
    if not standin.exists():
        generate_dataset(standin, n_images=n_images, seed=0)
    env = dvc_env(tmp)
    label = f"{cache_type.split(',')[0]}-{int(keep_cache)}"
    repo, dl_cache = tmp / f"fp-{label}", tmp / f"dl-{label}"
    dvc_repo(repo, env, cache_type)
    out = repo / "data" / "lila" / "fetch"
    with LilaStandin(standin) as srv:
        classes = ["mule deer", "cougar", "wild turkey", "empty"]
        fetch_over = {"dataset": "NACTI-demo", "caps": {}, "index_url": srv.index_url}
        cfg = source_defaults("lila", classes=classes, fetch=fetch_over)
        fetch_cfg = dataclasses.replace(group_defaults("fetch"), keep_cache=keep_cache)
        rows, _ = fetch(
            LILA, cfg, fetch_cfg, group_defaults("store"), out, dl_cache, executor=LocalExecutor(2)
        )
    run(["dvc", "add", "-q", "data/lila/fetch"], repo, env)
    payload = sum(r.bytes for r in rows if r.status == "ok")
    used = disk_bytes(out, repo / ".dvc" / "cache", dl_cache)
    return used / payload, payload


def main() -> None:
    """Run the three edits, the push and the footprint; print the ratios."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--mean-bytes", type=int, default=4096, help="mean payload size")
    ap.add_argument("--shard-bytes", type=int, default=1 << 20)
    ap.add_argument("--footprint-images", type=int, default=300)
    args = ap.parse_args()
    n, mean, shard = args.items, args.mean_bytes, args.shard_bytes
    with bench_dir("growth-") as tmp:
        blobs = tmp / "blobs"
        pools = universe(n)
        base_caps = {CAPPED: n // len(CLASSES)}
        base = select(pools, CLASSES, base_caps)
        edits = {}
        # (a) the capped class takes 1% more of the store.
        edits["cap"] = select(pools, CLASSES, {CAPPED: n // len(CLASSES) + n // 100})
        # (b) a new class holding 1% of the items.
        grown = {**pools, "c10": pool("c10", n // 100)}
        edits["class"] = select(grown, [*CLASSES, "c10"], base_caps)
        # (c) 1% new images upstream, spread over the uncapped classes.
        scattered = {c: set(p) for c, p in pools.items()}
        free = [c for c in CLASSES if c != CAPPED]
        for i in range(n // 100):
            new = image_id(f"new/{i}")
            scattered[free[int(new[:8], 16) % len(free)]].add(new)
        edits["scattered"] = select(scattered, CLASSES, base_caps)
        print(f"store: {len(base):,} items of ~{mean:,} B, shards of {shard:,} B", flush=True)
        t0 = time.perf_counter()
        build(tmp / "base", base, blobs, mean, shard)
        print(f"  base build {time.perf_counter() - t0:.1f} s", flush=True)
        build_by_id(tmp / "base-id", base, blobs, mean, shard)
        fractions = {}
        for name, rows in edits.items():
            build(tmp / name, rows, blobs, mean, shard)
            build_by_id(tmp / f"{name}-id", rows, blobs, mean, shard)
            frac, changed, total = rewrite_fraction(tmp / "base", tmp / name)
            old, old_changed, old_total = rewrite_fraction(tmp / "base-id", tmp / f"{name}-id")
            fractions[name] = frac
            print(
                f"  ({name}) {len(rows) - len(base):+,} items: {changed}/{total} shards rewritten, "
                f"fraction {frac:.4f}; by item id (previous layout) {old_changed}/{old_total}, "
                f"{old:.4f}",
                flush=True,
            )
            if name != "cap":
                for path in (tmp / name, tmp / f"{name}-id"):
                    subprocess.run(["rm", "-rf", str(path)], check=True)
        push, sent = push_fraction(tmp, tmp / "base", tmp / "cap")
        push_old, sent_old = push_fraction(tmp / "old", tmp / "base-id", tmp / "cap-id")
        print(
            f"  dvc push after (a): {sent / 1e6:.1f} MB, {push:.4f} of the store; by item id "
            f"{sent_old / 1e6:.1f} MB, {push_old:.4f}",
            flush=True,
        )
        ratio, payload = footprint(tmp, args.footprint_images, project_cache_type(), False)
        old_ratio, _ = footprint(tmp, args.footprint_images, "copy", True)
        print(
            f"footprint of fetch@lila ({payload / 1e6:.1f} MB of payload): "
            f"{ratio:.3f}x with cache.type {project_cache_type()} and keep_cache false; "
            f"{old_ratio:.3f}x with cache.type copy and keep_cache true (before)",
            flush=True,
        )
    print(
        f"cap_rewrite_fraction={fractions['cap']:.4f} "
        f"class_rewrite_fraction={fractions['class']:.4f} "
        f"scattered_rewrite_fraction={fractions['scattered']:.4f} "
        f"push_fraction={push:.4f} footprint_ratio={ratio:.3f}"
    )


if __name__ == "__main__":
    main()
