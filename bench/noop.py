"""Time a no-op `dvc repro` and `dvc status` of a built pipeline holding 1,000,000 items,
against `git status` of the same repo (the floor).

A copy of the project builds LILA's stages for real from a small stand-in (every output,
metric and plot made by the stages), then its fetch, clean and npz outputs are replaced by
1,000,000-item versions in the same formats (tiny payloads) and committed with `dvc commit`,
so dvc.lock describes a pipeline of that size. Each command then runs three times; medians.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import ROOT, bench_dir, dvc_env, median, timed

from stages.core.store import Packer, Row, member_name, rebase, write_manifest

SOURCES = ("figure8", "kinetics", "tator", "videodir")  # disabled: LILA alone is built
CLASSES = ("mule deer", "cougar", "wild turkey", "empty")


def env_for(tmp: Path) -> dict:
    """Return a DVC environment isolated in tmp, with its own download cache."""
    env = dvc_env(tmp)
    env["DSREPO_CACHE_DIR"] = str(tmp / "dl-cache")
    env.pop("PYTHONPATH", None)
    return env


def copy_project(dest: Path, index_url: str, env: dict) -> None:
    """Copy the project's files as a fresh clone has them; build LILA alone, from index_url."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for rel in filter(None, files.split("\0")):
        if (ROOT / rel).is_file() and not rel.startswith("data/"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    for name in SOURCES:
        path = dest / "conf" / "source" / f"{name}.yaml"
        path.write_text(path.read_text().replace("enabled: true", "enabled: false", 1))
    lila = dest / "conf" / "source" / "lila.yaml"
    text = lila.read_text()
    lila.write_text(text.replace("http://127.0.0.1:8765/lila_camera_trap_datasets.csv", index_url))
    compose = [sys.executable, "-m", "stages.compose", "params.yaml", "--force"]
    subprocess.run(compose, cwd=dest, env=env, capture_output=True)  # asks for a second run
    timed(compose, dest, env)
    timed(["git", "init", "-q", "-b", "main"], dest, env)
    timed(["git", "add", "-A"], dest, env)
    timed(["git", "commit", "-qm", "init"], dest, env)


def big_fetch(out: Path, n: int) -> list[Row]:
    """Write an n-item fetch store (tiny payloads) as the fetch stage lays one out."""
    shutil.rmtree(out)
    packer = Packer(out, 256 << 20)
    rows = []
    per = n // len(CLASSES)
    for k, name in enumerate(CLASSES):
        for i in range(per):
            item = f"NACTI-demo/{k}/{i:07d}.jpg"
            data = item.encode() * 4
            shard, offset = packer.add(name, member_name(item, ".jpg"), io.BytesIO(data), len(data))
            rows.append(
                Row(
                    item,
                    "lila",
                    f"{k}-{i}",
                    url=f"http://127.0.0.1/{item}",
                    bytes=len(data),
                    width=8,
                    height=8,
                    labels=[name],
                    status="ok",
                    shard=shard,
                    offset=offset,
                    meta={"location": f"loc{i % 500}"},
                )
            )
    packer.close()
    write_manifest(out, rows, list(CLASSES))
    return rows


def big_clean(fetch: Path, out: Path, rows: list[Row]) -> None:
    """Write the clean manifest of those rows (pointing into the fetch shards), with splits."""
    shutil.rmtree(out)
    out.mkdir()
    for i, row in enumerate(rows):
        row.split = ("train", "train", "train", "val", "test")[i % 5]
    write_manifest(out, rebase(rows, fetch, out), list(CLASSES))


def big_npz(out: Path, n: int, per_shard: int) -> None:
    """Write n items as npz shards of 8x8 images, per split."""
    shutil.rmtree(out)
    for split, share in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        (out / split).mkdir(parents=True)
        count = int(n * share)
        for s, start in enumerate(range(0, count, per_shard)):
            m = min(per_shard, count - start)
            x = np.zeros((m, 8, 8, 3), np.uint8)
            y = np.arange(m, dtype=np.int32) % len(CLASSES)
            np.savez(out / split / f"shard-{s:05d}.npz", X=x, y=y)


def main() -> None:
    """Build, enlarge, commit, then time the no-op commands."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from standins.lila import LilaStandin, generate_dataset

    with bench_dir("noop-") as tmp:
        env = env_for(tmp)
        repo = tmp / "repo"
        generate_dataset(tmp / "standin", n_images=40, seed=0)
        t0 = time.perf_counter()
        with LilaStandin(tmp / "standin") as srv:
            copy_project(repo, srv.index_url, env)
            timed(["dvc", "repro", "-q"], repo, env)
        print(
            f"built LILA's stages from the stand-in: {time.perf_counter() - t0:.1f} s", flush=True
        )
        t0 = time.perf_counter()
        data = repo / "data" / "lila"
        rows = big_fetch(data / "fetch", args.items)
        big_clean(data / "fetch", data / "clean", rows)
        del rows
        big_npz(data / "npz", args.items, 1000)
        timed(["dvc", "commit", "-f", "-q"], repo, env)
        timed(["git", "add", "-A"], repo, env)
        timed(["git", "commit", "-qm", "1M items"], repo, env)
        shards = len(list((data / "fetch" / "shards").iterdir()))
        npz = sum(1 for _ in (data / "npz").rglob("*.npz"))
        print(
            f"{args.items:,} items: {shards} fetch shards, {npz} npz files; enlarged and "
            f"committed in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        status = subprocess.run(
            ["dvc", "status", "-q"], cwd=repo, env=env, capture_output=True, text=True
        )
        if status.returncode != 0 or status.stdout.strip():
            raise RuntimeError(f"the pipeline is not up to date:\n{status.stdout}{status.stderr}")
        times = {"git status": [], "dvc status": [], "dvc repro": []}
        for _ in range(args.rounds):
            times["git status"].append(timed(["git", "status", "--porcelain"], repo, env))
            times["dvc status"].append(timed(["dvc", "status", "-q"], repo, env))
            times["dvc repro"].append(timed(["dvc", "repro", "-q"], repo, env))
        med = {k: median(v) for k, v in times.items()}
        for name, value in med.items():
            runs = ", ".join(f"{t:.2f}" for t in times[name])
            print(f"  {name:<11} {value:6.2f} s (median of {runs})", flush=True)
        after = subprocess.run(
            ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True
        )
        if after.stdout.strip():
            raise RuntimeError(f"the no-op repro changed files:\n{after.stdout}")
    print(
        f"noop_repro_s={med['dvc repro']:.2f} "
        f"noop_vs_git_status={med['dvc repro'] / med['git status']:.1f}"
    )


if __name__ == "__main__":
    main()
