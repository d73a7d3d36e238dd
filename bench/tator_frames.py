"""fetch@tator against the seed's way of getting annotated frames, on a slow local Tator.

The stand-in holds 2,000 annotated frames across 20 media and adds 50 ms to every response
(a realistic round trip to a hosted Tator). In the same run, alternating rounds:
- seed: the notebook's method: list media, localizations and states per media with the
  `tator` client, then `api.get_frame(media, frames=[f])` per frame on a
  ThreadPoolExecutor(12), moving each temp file into place;
- ours: the whole fetch@tator stage function (metadata paged through the bounded client,
  frames through the shared downloader, packed into the store), from an empty cache.
Both fetch the same frames (checked). The last line is ours/seed in frames per second.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import bench_dir, median, settle, tator_standin

from stages.core.executor import LocalExecutor
from stages.core.store import Store
from stages.fetch import fetch
from stages.pipeline.compose import group_defaults, source_defaults
from stages.sources import load

N_MEDIA = 20
FRAMES_PER_MEDIA = 100
DELAY = 0.05
SEED_THREADS = 12
TOKEN = "bench-token"


def seed_method(url: str, out: Path) -> int:
    """Fetch every annotated frame the way the seed notebook does; return the frame count."""
    import tator

    api = tator.get_api(host=url, token=TOKEN)
    out.mkdir(parents=True)
    jobs = []
    for media in api.get_media_list(1):
        locs = api.get_localization_list(1, media_id=[media.id])
        api.get_state_list(1, media_id=[media.id])
        stem = media.name.replace(":", "_").split(".")[0]
        frames = sorted({loc.frame for loc in locs})
        jobs += [(media.id, f, out / f"{stem}_{f}.jpg") for f in frames]

    def download(job):
        media_id, frame, dst = job
        src = api.get_frame(media_id, frames=[frame])
        shutil.move(src, dst)

    with ThreadPoolExecutor(max_workers=SEED_THREADS) as pool:
        list(pool.map(download, jobs))
    return len(jobs)


def ours(url: str, work: Path, workers: int) -> int:
    """Run the fetch@tator stage function from an empty cache; return the frame count."""
    cfg = source_defaults("tator", fetch={"host": url})
    rows, metrics = fetch(
        load("tator"),
        cfg,
        group_defaults("fetch", source_workers={"tator": workers}),
        group_defaults("store"),
        work / "fetch",
        work / "cache",
        executor=LocalExecutor(2),
    )
    assert metrics["ok"] == len(rows), metrics["reasons"]
    return len(Store(work / "fetch").rows())


def standin():
    """Run the Tator stand-in, frames rendered up front; yield its URL."""
    return tator_standin(
        "--plain", "--warm", "--media", str(N_MEDIA), "--frames-per-media",
        str(FRAMES_PER_MEDIA), "--seed", "1", "--delay", str(DELAY), "--token", TOKEN,
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="ours: transfers (0: as conf/fetch)")
    args = ap.parse_args()
    defaults = group_defaults("fetch")
    workers = args.workers or defaults.source_workers.get("tator", defaults.workers)
    os.environ["TATOR_TOKEN"] = TOKEN
    with standin() as url, bench_dir("tator-") as tmp:
        print(
            f"{N_MEDIA} media x {FRAMES_PER_MEDIA} annotated frames, {DELAY * 1000:.0f} ms per "
            f"response; seed: ThreadPoolExecutor({SEED_THREADS}); ours: {workers} transfers"
        )
        times: dict[str, list[float]] = {"seed": [], "ours": []}
        counts = {}
        for r in range(args.rounds):
            for name in ("seed", "ours") if r % 2 == 0 else ("ours", "seed"):
                work = tmp / f"{name}-{r}"
                settle()
                start = time.perf_counter()
                if name == "seed":
                    counts[name] = seed_method(url, work)
                else:
                    counts[name] = ours(url, work, workers)
                times[name].append(time.perf_counter() - start)
                shutil.rmtree(work, ignore_errors=True)
                took = times[name][-1]
                print(f"round {r} {name:4s} {took:6.2f} s  {counts[name] / took:6.1f} frames/s")
        if counts["seed"] != counts["ours"]:
            raise SystemExit(f"frame counts differ: {counts}")
        # For the record: how much of the gain is transfers in flight (the seed's 12).
        start = time.perf_counter()
        ours(url, tmp / "ours-12", SEED_THREADS)
        took = time.perf_counter() - start
        rate = counts["ours"] / took
        print(f"ours with {SEED_THREADS} transfers {took:6.2f} s  {rate:6.1f} frames/s")
    rates = {k: counts[k] / median(v) for k, v in times.items()}
    for name, rate in rates.items():
        print(f"{name:4s} median {median(times[name]):6.2f} s  {rate:7.1f} frames/s")
    print(f"tator_speedup={rates['ours'] / rates['seed']:.3f}")


if __name__ == "__main__":
    main()
