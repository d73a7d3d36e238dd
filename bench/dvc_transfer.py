"""Time dvc push/pull of a tar-sharded store against cp -r of the same items as files."""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import time
from pathlib import Path

from _common import (
    ROOT,
    bench_dir,
    dvc_env,
    median,
    run,
    settle,
    sha256_file,
    timed,
    tree_bytes,
    tree_files,
)

PER_DIR = 1000  # items per subdirectory of the unpacked originals


def make_items(root: Path, n: int, mean_bytes: int, seed: int = 0) -> list[Path]:
    """Write n files of random bytes, sizes uniform in mean +- 10%, 1,000 per subdirectory."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sizes = rng.integers(int(mean_bytes * 0.9), int(mean_bytes * 1.1) + 1, n)
    paths = []
    for start in range(0, n, PER_DIR):
        sub = root / f"{start // PER_DIR:04d}"
        sub.mkdir(parents=True)
        chunk = sizes[start : start + PER_DIR]
        blob = rng.bytes(int(chunk.sum()))
        at = 0
        for i, size in enumerate(chunk, start):
            path = sub / f"{i:07d}.bin"
            path.write_bytes(blob[at : at + size])
            at += int(size)
            paths.append(path)
    return paths


def tree_hashes(root: Path) -> dict[str, str]:
    """Map each file's path relative to root to its sha256."""
    return {rel: sha256_file(p) for rel, p in tree_files(root).items()}


def check_payloads(store_dir: Path, originals: dict[str, Path]) -> int:
    """Fail unless every item read back from the store's shards equals its original file."""
    from stages.core.store import Store

    n = 0
    for row, data in Store(store_dir).iter_payloads():
        want = hashlib.sha256(originals[row.item_id].read_bytes()).digest()
        if hashlib.sha256(data).digest() != want:
            raise AssertionError(f"pulled store: {row.item_id} differs from its original")
        n += 1
    if n != len(originals):
        raise AssertionError(f"pulled store: {n} payloads, want {len(originals)}")
    return n


def main() -> None:
    """Run the benchmark and print pull_vs_copy as the last line."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=100_000, help="items in the dataset")
    ap.add_argument("--item-kb", type=float, default=10.0, help="mean item size in KB")
    ap.add_argument("--shard-mb", type=float, default=256.0, help="tar shard size in MiB")
    ap.add_argument("--rounds", type=int, default=3, help="alternating cp / pull rounds")
    ap.add_argument("--jobs", type=int, default=None, help="dvc push/pull -j (default: dvc's)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3,000 items, 4 MiB shards")
    args = ap.parse_args()
    if args.quick:
        args.items, args.shard_mb, args.rounds = 3000, 4.0, 1
    sys.path.insert(0, str(ROOT))
    from stages.core.executor import LocalExecutor
    from stages.core.store import Row, write_store

    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"
    jobs = ["-j", str(args.jobs)] if args.jobs else []
    with bench_dir("bench-dvc-") as tmp:
        env = dvc_env(tmp)
        t0 = time.perf_counter()
        paths = make_items(tmp / "items", args.items, int(args.item_kb * 1000))
        total = sum(p.stat().st_size for p in paths)
        print(
            f"generated {len(paths)} items, {total / 1e6:.1f} MB, "
            f"in {len(paths) // PER_DIR + bool(len(paths) % PER_DIR)} dirs "
            f"in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )

        version = run([dvc, "--version"], tmp, env).strip()
        print(f"dvc {version}, local directory remote, default cache type", flush=True)
        repo, remote = tmp / "repo", tmp / "remote"
        repo.mkdir()
        run(["git", "init", "-q"], repo, env)
        run([dvc, "init", "-q"], repo, env)
        run([dvc, "config", "core.analytics", "false"], repo, env)
        run([dvc, "remote", "add", "-d", "r", str(remote)], repo, env)

        originals: dict[str, Path] = {}
        rows = []
        for i, p in enumerate(paths):
            item_id = f"bench/{i:07d}"
            originals[item_id] = p
            rows.append(
                Row(
                    item_id=item_id,
                    source="bench",
                    source_id=str(i),
                    url=f"http://x/{i:07d}.bin",
                    status="ok",
                )
            )
        store_dir = repo / "data" / "items"
        t0 = time.perf_counter()
        write_store(
            store_dir,
            rows,
            lambda r: originals[r.item_id],
            shard_bytes=int(args.shard_mb * (1 << 20)),
            executor=LocalExecutor(2),
        )
        shards = sorted((store_dir / "shards").glob("*.tar"))
        store_bytes = tree_bytes(store_dir)
        print(
            f"write_store: {len(shards)} shards of <= {args.shard_mb:g} MiB + manifest, "
            f"{store_bytes / 1e6:.1f} MB in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )

        settle()
        add_s = timed([dvc, "add", "-q", "data/items"], repo, env)
        run(["git", "add", "-A"], repo, env)
        run(["git", "commit", "-q", "-m", "data"], repo, env)
        print(f"dvc add data/items: {add_s:.2f} s", flush=True)

        settle()
        push_s = timed([dvc, "push", "-q", *jobs], repo, env)
        print(f"dvc push: {push_s:.2f} s", flush=True)

        # Alternate the baseline and the pull. The originals, the shards and the remote were all
        # written moments ago and fit in RAM, so every side reads from the page cache. Nothing is
        # deleted until the end: on ext4 without a journal, creating files soon after mass
        # deletes is slow, which would penalise cp's 100,000 creates.
        want = tree_hashes(store_dir)
        copy_times, pull_times = [], []
        for rnd in range(1, args.rounds + 1):
            copy = tmp / f"copy-{rnd}"
            settle()
            copy_s = timed(["cp", "-r", str(tmp / "items"), str(copy)])
            if len(tree_files(copy)) != len(paths) or tree_bytes(copy) != total:
                raise AssertionError("cp -r: the copy differs from the originals")
            copy_times.append(copy_s)

            clone = tmp / f"clone-{rnd}"
            run(["git", "clone", "-q", str(repo), str(clone)], tmp, env)
            url = run([dvc, "config", "remote.r.url"], clone, env).strip()
            if Path(url).resolve() != remote.resolve():
                run([dvc, "remote", "add", "--local", "-f", "-d", "r", str(remote)], clone, env)
            settle()
            pull_s = timed([dvc, "pull", "-q", *jobs], clone, env)
            pull_times.append(pull_s)
            got = tree_hashes(clone / "data" / "items")
            if want != got:
                raise AssertionError(f"pulled store differs: {len(got)} files vs {len(want)}")
            print(
                f"round {rnd}: cp -r {len(paths)} files {copy_s:.2f} s; "
                f"dvc pull into a fresh clone (empty cache) {pull_s:.2f} s; "
                f"{len(got)} pulled files byte-identical (sha256)",
                flush=True,
            )
        n = check_payloads(tmp / "clone-1" / "data" / "items", originals)
        print(f"verified: {n} payloads read from the pulled shards equal their originals")
        pull_s, copy_s = median(pull_times), median(copy_times)
        print(
            f"summary: {len(paths)} items, {total / 1e6:.1f} MB as {len(shards)} shards; "
            f"dvc add {add_s:.2f} s, dvc push {push_s:.2f} s, "
            f"dvc pull {pull_s:.2f} s, cp -r {copy_s:.2f} s (medians of {args.rounds})"
        )
    print(f"pull_vs_copy={pull_s / copy_s:.3f}")


if __name__ == "__main__":
    main()
