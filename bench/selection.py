"""Benchmark LILA selection on a NACTI-sized COCO Camera Traps JSON: ours vs json.load."""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, bench_dir

# The seed notebook's classes; `empty` capped at 55,000 as the seed did by shuffling.
SEED_CLASSES = [
    "california quail",
    "wild turkey",
    "mule deer",
    "cougar",
    "california ground squirrel",
    "american black bear",
    "vehicle",
    "empty",
]
EMPTY_CAP = 55_000


def categories() -> list[dict]:
    """Return 59 NACTI-like categories (id 0 = empty) with Latin and common names."""
    named = [
        ("empty", "empty"),
        ("california quail", "callipepla californica"),
        ("wild turkey", "meleagris gallopavo"),
        ("mule deer", "odocoileus hemionus"),
        ("cougar", "puma concolor"),
        ("california ground squirrel", "otospermophilus beecheyi"),
        ("american black bear", "ursus americanus"),
        ("vehicle", "vehicle"),
        ("domestic cow", "bos taurus"),
        ("wild boar", "sus scrofa"),
        ("red deer", "cervus elaphus"),
    ]
    named += [(f"species {i}", f"genus{i} species{i}") for i in range(len(named), 59)]
    return [
        {
            "id": i,
            "name": latin,
            "species": latin,
            "genus": latin.split()[0],
            "family": "f",
            "ord": "o",
            "class": "c",
            "common name": common,
        }
        for i, (common, latin) in enumerate(named)
    ]


def generate(path: Path, n: int, seed: int = 0) -> None:
    """Write a COCO-CT JSON like NACTI (images, info, categories, annotations; indent=1)."""
    rng = random.Random(seed)
    cats = categories()
    # Skewed like NACTI: cattle, boar, red deer dominate; ~12% empty.
    weights = [12, 0.6, 1.2, 3, 0.8, 0.7, 1.5, 0.8, 30, 20, 15] + [0.5] * (len(cats) - 11)
    cat_ids = rng.choices(range(len(cats)), weights=weights, k=n)
    ids = [
        f"part{i % 4}/sub{(i // 1000) % 1000:03d}/{2010 + i % 7}_Unit{i % 677:03d}_"
        f"Ivan{i % 97:03d}_img{i:07d}"
        for i in range(n)
    ]
    step = 100_000
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('{\n "images": [\n')
        for s in range(0, n, step):
            part = [
                f'  {{\n   "id": "{ids[i]}",\n   "file_name": "{ids[i]}.jpg",\n'
                f'   "width": 2048,\n   "height": 1536,\n   "location": "{i % 677}",\n'
                f'   "datetime": "2012-0{1 + i % 9}-1{i % 10} 1{i % 10}:2{i % 10}:3{i % 10}"\n  }}'
                for i in range(s, min(n, s + step))
            ]
            fh.write(",\n".join(part) + (",\n" if s + step < n else "\n"))
        fh.write(' ],\n "info": {"version": "1.14", "description": "bench"},\n')
        fh.write(' "categories": ' + json.dumps(cats, indent=1) + ',\n "annotations": [\n')
        for s in range(0, n, step):
            part = []
            for i in range(s, min(n, s + step)):
                box = (
                    f',\n   "bbox": [{i % 500}.5, 100.0, 200.0, 150.0]'
                    if i % 400 == 0 and cat_ids[i]
                    else ""
                )
                part.append(
                    f'  {{\n   "id": "ann{i:08d}",\n   "image_id": "{ids[i]}",\n'
                    f'   "category_id": {cat_ids[i]}{box}\n  }}'
                )
            fh.write(",\n".join(part) + (",\n" if s + step < n else "\n"))
        fh.write(" ]\n}\n")


def run_seed(path: str) -> int:
    """Select like the seed: json.load, then comprehensions over the whole document."""
    with open(path) as f:
        data = json.load(f)
    categories = data["categories"]
    wanted = {c["id"] for c in categories if c["common name"] in SEED_CLASSES}
    annotations = data["annotations"]
    image_ids = {a["image_id"] for a in annotations if a["category_id"] in wanted}
    empty = {c["id"] for c in categories if c["common name"] == "empty"}
    empty_ids = [a["image_id"] for a in annotations if a["category_id"] in empty]
    random.Random(0).shuffle(empty_ids)
    drop = set(empty_ids[EMPTY_CAP:])
    files = [
        im["file_name"] for im in data["images"] if im["id"] in image_ids and im["id"] not in drop
    ]
    return len(files)


def run_ours(path: str) -> int:
    """Select with the project's streaming reader, seeded ranking and caps."""
    from stages.formats.coco_ct import read_metadata
    from stages.pipeline.compose import source_defaults
    from stages.sources.lila.rows import ClassSelector, build_rows

    settings = dict(
        dataset="bench", caps={"empty": EMPTY_CAP}, cap=None, est_bytes_per_image=400_000
    )
    cfg = source_defaults("lila", classes=SEED_CLASSES, fetch=settings)
    f = cfg.fetch
    selector = ClassSelector(cfg)
    meta, _ = read_metadata(
        Path(path), selector, f.max_metadata_bytes, max_value_bytes=f.max_json_value_bytes
    )
    base = "https://example.org/nacti-unzipped"
    rows = build_rows(meta, selector.result, f.dataset, base, "lila")
    return len(rows)


def child(which: str, path: str) -> None:
    """Run one method in this process and print seconds, peak RSS and the selection size."""
    start = time.perf_counter()
    n = run_seed(path) if which == "seed" else run_ours(path)
    secs = time.perf_counter() - start
    # Our reader may use a helper process: count its peak too (summed, to be conservative).
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_mb += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": secs, "rss_mb": rss_mb, "selected": n}))


def measure(which: str, path: Path) -> dict:
    """Run one method in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", which, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Generate the JSON, time both methods alternately, print the ratio last."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=3_400_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="100k images, one round")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.quick:
        args.images, args.rounds = 100_000, 1
    with bench_dir("bench-selection-") as tmp:
        path = tmp / "metadata.json"
        t = time.perf_counter()
        generate(path, args.images)
        print(
            f"generated {args.images:,} images, {path.stat().st_size / 1e9:.2f} GB "
            f"in {time.perf_counter() - t:.1f} s",
            flush=True,
        )
        seed, ours = [], []
        for r in range(args.rounds):
            seed.append(measure("seed", path))
            ours.append(measure("ours", path))
            print(
                f"round {r + 1}: seed {seed[-1]['seconds']:.1f} s "
                f"{seed[-1]['rss_mb']:.0f} MB ({seed[-1]['selected']:,} images) | "
                f"ours {ours[-1]['seconds']:.1f} s {ours[-1]['rss_mb']:.0f} MB "
                f"({ours[-1]['selected']:,} images)",
                flush=True,
            )
    s = min(x["seconds"] for x in seed)
    o = min(x["seconds"] for x in ours)
    peak = max(x["rss_mb"] for x in ours)
    print(
        f"seed best {s:.2f} s, ours best {o:.2f} s, ours peak RSS {peak:.0f} MB "
        f"(seed {max(x['rss_mb'] for x in seed):.0f} MB)"
    )
    print(f"select_vs_seed={o / s:.3f} select_peak_rss_mb={peak:.1f}")


if __name__ == "__main__":
    main()
