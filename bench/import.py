"""import@videodir into Tator against the original importer's pattern, on a slow local Tator.

500 generated H.264 clips of about 1 MB under <camera>/<label>/<timestamp>.mp4, imported into
the Tator stand-in (its own process) with 50 ms added to every response, a fresh empty
project for each side. In the same run:
- original: Camio's pattern with the real `tator` client: one file at a time, each file
  re-hashed on every run, a request per file asking whether it is there, then upload_media;
- ours: fetch@videodir (hash and pack into the store) then import@videodir's run_import
  (one listing of what is there, uploads in parallel through the same upload_media).
Then each side again over the unchanged folder: the original re-hashes and asks per file;
ours re-runs only the import (DVC skips fetch@videodir, whose folder did not change; its
re-run time is printed for the record). Both must leave the same files on their server, once
each. The last line: our first-import files/s over the original's, and our re-run's time as a
fraction of our first import's.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from _common import bench_dir, settle, sha256_file, tator_standin

from stages.core.executor import LocalExecutor
from stages.core.store import Store
from stages.fetch import fetch
from stages.import_media import run_import
from stages.pipeline.compose import group_defaults, source_defaults
from stages.sources import load
from stages.targets.tator import TatorTarget

N_FILES = 500
CAMERAS = 5
DELAY = 0.05
TOKEN = "bench-token"
LABELS = ("person", "vehicle", "animal")


def clip(job: tuple[Path, int]) -> int:
    """Write one ~1 MB clip; return its size."""
    from standins.video import make_clip

    path, seed = job
    make_clip(path, seconds=2, fps=10, width=320, height=240, crf=8, noise=90, seed=seed,
              preset="ultrafast")  # fmt: skip
    return path.stat().st_size


def make_videos(root: Path, n: int) -> int:
    """Write n clips under <camera>/<label>/<YYYYmmdd_HHMMSS>.mp4; return their bytes."""
    jobs = []
    for i in range(n):
        cam, label = f"cam{i % CAMERAS}", LABELS[i % len(LABELS)]
        stamp = f"202405{1 + i // 400:02d}_{(i // 20) % 20:02d}{(i % 20) * 3:02d}00"
        jobs.append((root / cam / label / f"{stamp}.mp4", 1000 + i))
    with ProcessPoolExecutor(2) as pool:
        return sum(pool.map(clip, jobs, chunksize=10))


def standin():
    """Run an empty Tator project adding DELAY to every response; yield its URL."""
    return tator_standin("--empty", "--delay", str(DELAY), "--token", TOKEN)


def original(url: str, folder: Path, media_type: int) -> int:
    """Import the folder as the original did, file by file; return the files sent."""
    import tator

    api = tator.get_api(host=url, token=TOKEN)
    sent = 0
    for path in sorted(folder.rglob("*.mp4")):
        sha = sha256_file(path)  # every run hashes every file again
        camera = path.relative_to(folder).parts[0]
        hits = api.get_media_list(1, type=media_type, attribute=[f"sha256::{sha}"])
        if any((m.get("attributes") or {}).get("sha256") == sha for m in hits):
            continue
        attrs = {"sha256": sha, "Camera": camera}
        for _ in tator.util.upload_media(api, media_type, str(path), section=camera,
                                         attributes=attrs):  # fmt: skip
            pass
        sent += 1
    return sent


def server_files(url: str, media_type: int) -> list[str]:
    """Return the sha256 of every media on the server (duplicates kept)."""
    import tator

    api = tator.get_api(host=url, token=TOKEN)
    return sorted(m["attributes"]["sha256"] for m in api.get_media_list(1, type=media_type))


def ours_settings(url: str, folder: Path):
    """Return the shipped videodir settings, reading `folder`, importing into `url`."""
    cfg = source_defaults("videodir", fetch={"root": str(folder)})
    tator_conf = dataclasses.replace(cfg.import_to.tator, host=url)
    import_to = dataclasses.replace(cfg.import_to, tator=tator_conf)
    return dataclasses.replace(cfg, import_to=import_to)


def ours_fetch(cfg, work: Path) -> None:
    """Run fetch@videodir's stage function into work/fetch."""
    rows, metrics = fetch(
        load("videodir"),
        cfg,
        group_defaults("fetch"),
        group_defaults("store"),
        work / "fetch",
        work / "cache",
        executor=LocalExecutor(2),
    )
    assert metrics["ok"] == len(rows), metrics


def ours_import(cfg, work: Path) -> dict:
    """Run import@videodir's run_import; return its metrics."""
    retry = group_defaults("fetch")
    target = TatorTarget(cfg.import_to.tator, retry, workers=cfg.import_to.workers)
    try:
        _, _, metrics = run_import(cfg.import_to, Store(work / "fetch"), target, "b", retry)
    finally:
        target.close()
    assert metrics["failed"] == 0, metrics
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=N_FILES)
    args = ap.parse_args()
    os.environ["TATOR_TOKEN"] = TOKEN
    media_type = source_defaults("videodir").import_to.tator.media_type
    with bench_dir("import-") as tmp:
        folder = tmp / "videos"
        size = make_videos(folder, args.files)
        n = args.files
        workers = source_defaults("videodir").import_to.workers
        print(
            f"{n} clips, {size / n / 1e6:.2f} MB each on average, {DELAY * 1000:.0f} ms per "
            f"response; ours: {workers} uploads at once (import_to.workers)"
        )
        times = {}
        with standin() as url:
            settle()
            start = time.perf_counter()
            assert original(url, folder, media_type) == n
            times["original"] = time.perf_counter() - start
            start = time.perf_counter()
            assert original(url, folder, media_type) == 0
            times["original rerun"] = time.perf_counter() - start
            theirs = server_files(url, media_type)
        with standin() as url:
            cfg = ours_settings(url, folder)
            work = tmp / "ours"
            settle()
            start = time.perf_counter()
            ours_fetch(cfg, work)
            times["ours fetch"] = time.perf_counter() - start
            assert ours_import(cfg, work)["sent"] == n
            times["ours"] = time.perf_counter() - start
            start = time.perf_counter()
            assert ours_import(cfg, work)["present"] == n
            times["ours rerun"] = time.perf_counter() - start
            start = time.perf_counter()
            ours_fetch(cfg, tmp / "ours-again")
            times["ours fetch again (skipped by DVC)"] = time.perf_counter() - start
            mine = server_files(url, media_type)
        if theirs != mine or len(set(mine)) != n:
            raise SystemExit("the two imports left different files (or duplicates)")
    for name, took in times.items():
        print(f"{name:36s} {took:7.2f} s  {n / took:7.1f} files/s")
    speedup = times["original"] / times["ours"]
    print(f"import_speedup={speedup:.3f} rerun_fraction={times['ours rerun'] / times['ours']:.4f}")


if __name__ == "__main__":
    main()
