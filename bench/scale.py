"""Compare the local executor with a 2-worker Dask LocalCluster on the same work, alternating
rounds: fetch@lila of 5,000 JPEGs served by nginx (index, metadata and images as static
files), and extract-frames of 20 clips. Checks both executors write identical bytes, measures
the Dask per-task overhead with no-op tasks, and predicts NACTI (500 GB) at 8 and 64 workers.

On 2 cores no speed-up is possible: the point is the distributed path's overhead."""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

from _common import ROOT, bench_dir, median, settle, tree_files
from fetch import ensure_nginx, free_port, nginx_conf, start_nginx, stop_nginx
from frames import build_store, ensure_clips

CACHE = Path("/tmp/bench-scale")  # generated inputs, reused across runs
NACTI_BYTES = 500e9
NACTI_IMAGES = 3.4e6


def digest(root: Path) -> str:
    """Return one sha256 over every file's relative path and bytes under root."""
    h = hashlib.sha256()
    for rel, path in sorted(tree_files(root).items()):
        h.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def make_site(docroot: Path, n: int) -> list[str]:
    """Serve a LILA-like dataset of n images as static files (generated once into /tmp and
    reused: rendering 5,000 JPEGs takes minutes); return its classes."""
    import json

    from standins.lila import CLOUDS, REGISTRY_NAME, generate_dataset, is_generated

    data = CACHE / f"lila-{n}"
    args = {"n_images": n, "sizes": ((640, 480),), "box_fraction": 0.0}
    if not is_generated(data, **args):
        generate_dataset(data, **args)
    (registry,) = json.loads((data / REGISTRY_NAME).read_text())
    for cloud in CLOUDS:
        (docroot / cloud).symlink_to(data, target_is_directory=True)
    return sorted(registry["class_counts"])


def write_index(docroot: Path, url: str) -> None:
    """Write the datasets index with nginx's URLs (what the stand-in renders per request)."""
    from standins.lila import INDEX_NAME, LilaStandin

    standin = LilaStandin(docroot / "gcp", metadata_base=url, images_base=url)
    try:
        (docroot / INDEX_NAME).write_text(standin.index_csv())
    finally:
        standin.stop()


def fetch_once(cfg, out: Path, cache: Path, executor) -> tuple[float, dict]:
    """Run the fetch stage's function into out with a fresh cache; return seconds, metrics."""
    from stages.fetch import fetch
    from stages.pipeline.compose import group_defaults
    from stages.sources import load

    settle()
    start = time.perf_counter()
    _rows, metrics = fetch(
        load("lila"),
        cfg,
        group_defaults("fetch"),
        group_defaults("store"),
        out,
        cache,
        executor=executor,
    )
    return time.perf_counter() - start, metrics


def frames_once(inp: Path, out: Path, executor) -> tuple[float, dict]:
    """Run extract-frames' function; return seconds and metrics."""
    from stages.core.store import Store
    from stages.families import Inputs
    from stages.pipeline.compose import group_defaults, source_defaults
    from stages.sources import load

    source = load("kinetics")
    cfg = source_defaults("kinetics", frames={"short_side": 256, "num_frames": None})
    inputs = Inputs(source, cfg, Store(inp), out, 1 << 28, executor, group_defaults("split"))
    settle()
    start = time.perf_counter()
    metrics = source.extractor().run(inputs)
    return time.perf_counter() - start, metrics


def noop(x: int) -> int:
    """Do nothing (the per-task overhead probe)."""
    return x


def task_overhead(executor, n: int) -> float:
    """Return seconds per task of n no-op tasks through the executor's windowed map."""
    list(executor.map(noop, range(50)))  # warm: functions shipped, connections open
    start = time.perf_counter()
    for _ in executor.map(noop, range(n)):
        pass
    return (time.perf_counter() - start) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--noop-tasks", type=int, default=1000)
    args = ap.parse_args()

    from distributed import Client

    from stages.core.cluster import DaskExecutor, local_cluster
    from stages.core.executor import LocalExecutor
    from stages.pipeline.compose import source_defaults
    from stages.pipeline.executors import load_conf

    nginx = ensure_nginx()
    with bench_dir("bench-scale-") as tmp:
        docroot = tmp / "www"
        docroot.mkdir()
        t0 = time.perf_counter()
        classes = make_site(docroot, args.images)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        write_index(docroot, url)
        print(f"site: {args.images} images generated in {time.perf_counter() - t0:.1f}s")
        clips = ensure_clips(
            CACHE / "clips",
            args.clips,
            {
                "seconds": 4,
                "fps": 25,
                "width": 640,
                "height": 360,
                "gop": 50,
                "preset": "veryfast",
                "noise": 24,
            },
        )
        store = build_store(tmp / "clips", clips)
        cfg = source_defaults(
            "lila",
            classes=classes,
            fetch={
                "dataset": "NACTI-demo",
                "index_url": f"{url}/lila_camera_trap_datasets.csv",
                "caps": {},
                "est_bytes_per_image": 100_000,
            },
        )
        proc = start_nginx(
            nginx, nginx_conf(tmp, docroot, port), port, "lila_camera_trap_datasets.csv"
        )
        env = {"DSREPO_EXECUTOR": "dask", "DSREPO_EXECUTOR_OVERRIDES": "workers=2 wait_workers=2"}
        conf = load_conf(ROOT / "conf", env)  # conf/executor/dask.yaml, as a run would use it
        local = load_conf(ROOT / "conf", {"DSREPO_EXECUTOR": "local"})
        try:
            with local_cluster(conf) as cluster, Client(cluster) as client:
                client.wait_for_workers(2)
                times: dict[str, list[float]] = {k: [] for k in ("fl", "fd", "xl", "xd")}
                digests: dict[str, set[str]] = {k: set() for k in times}
                metrics = {}
                for r in range(args.rounds):
                    for key, what in (
                        ("fl", "local"),
                        ("fd", "dask"),
                        ("xl", "local"),
                        ("xd", "dask"),
                    ):
                        ex = (
                            LocalExecutor(cfg=local)
                            if what == "local"
                            else DaskExecutor(conf, client=client)
                        )
                        out = tmp / f"out-{key}-{r}"
                        with ex:
                            if key.startswith("f"):
                                sec, m = fetch_once(cfg, out, tmp / f"cache-{key}-{r}", ex)
                            else:
                                sec, m = frames_once(store, out, ex)
                        times[key].append(sec)
                        digests[key].add(digest(out))
                        metrics[key] = m
                        print(f"round {r} {key}: {sec:.2f}s", flush=True)
                with DaskExecutor(conf, client=client) as ex:
                    overhead = task_overhead(ex, args.noop_tasks)
                local_overhead = task_overhead(LocalExecutor(cfg=local), args.noop_tasks)
        finally:
            stop_nginx(proc)

    fetched = metrics["fl"]
    n_ok, nbytes = fetched["ok"], fetched["bytes"]
    assert metrics["fd"]["ok"] == n_ok == args.images, (fetched, metrics["fd"])
    identical = int(
        len(digests["fl"] | digests["fd"]) == 1 and len(digests["xl"] | digests["xd"]) == 1
    )
    fl, fd, xl, xd = (median(times[k]) for k in ("fl", "fd", "xl", "xd"))
    print(
        f"fetch  {n_ok} images {nbytes / 1e6:.0f} MB: local {fl:.2f}s ({n_ok / fl:.0f}/s, "
        f"{nbytes / 1e6 / fl:.1f} MB/s)  dask 2 workers {fd:.2f}s ({n_ok / fd:.0f}/s, "
        f"{nbytes / 1e6 / fd:.1f} MB/s)  ratio {fl / fd:.3f}"
    )
    frames = metrics["xl"]["frames"]
    print(
        f"frames {args.clips} clips -> {frames} frames: local {xl:.2f}s  dask {xd:.2f}s  "
        f"ratio {xl / xd:.3f}"
    )
    print(
        f"per-task overhead (no-op tasks, windowed map): dask {overhead * 1e3:.2f} ms, "
        f"local threads {local_overhead * 1e3:.3f} ms"
    )
    # The scheduler hands out tasks one at a time: with 64 images a task it caps the cluster
    # at 64/overhead images/s. Below that, each worker adds the bandwidth one worker had here
    # (bytes, not images: NACTI's images are larger than these).
    per_task = conf.items_per_task
    per_worker = nbytes / fd / 2
    avg = NACTI_BYTES / NACTI_IMAGES
    ceiling = per_task / overhead
    print(
        f"per worker here: {per_worker / 1e6:.1f} MB/s; scheduler ceiling at {per_task} images "
        f"a task: {ceiling:.0f} tasks' images/s ({ceiling * avg / 1e6:.0f} MB/s of NACTI)"
    )
    for workers in (8, 64):
        rate = min(workers * per_worker / avg, ceiling)
        hours = NACTI_IMAGES / rate / 3600
        bound = "scheduler" if rate == ceiling else "bandwidth"
        print(
            f"predicted NACTI ({NACTI_BYTES / 1e9:.0f} GB, {NACTI_IMAGES / 1e6:.1f}M images of "
            f"{avg / 1e3:.0f} KB) at {workers} workers: {rate:.0f} images/s "
            f"({rate * avg / 1e6:.0f} MB/s), {hours:.2f} h ({bound}-bound)"
        )
    ratio = (fl + xl) / (fd + xd)
    print(f"dask_vs_local={ratio:.3f} identical={identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
