"""Compare the extract-frames stage with the seed's ffmpeg CLI on generated clips, alternating
rounds: every frame (short side 256) against `ffmpeg -vf scale=-1:256 -q:v 2`, and 16-frame
sampling against a decode-only ffmpeg pass (`-f null -`), one ffmpeg process per clip."""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from _common import ROOT, bench_dir, median, settle, tree_bytes, tree_files

CACHE = Path("/tmp/bench-frames/clips")
FRAME = re.compile(rb"frame=\s*(\d+)")


def clip_spec(args: argparse.Namespace) -> dict:
    """Return make_clip's keyword arguments (less the seed) for the chosen clip shape."""
    return {
        "seconds": args.seconds,
        "fps": args.fps,
        "width": args.width,
        "height": args.height,
        "gop": 250,
        "preset": "veryfast",
        "noise": 24,
    }


def clip_path(cache: Path, seed: int, spec: dict) -> Path:
    """Return the cached clip's path, named by every argument that shapes its bytes."""
    s = spec
    return cache / (
        f"clip-{s['seconds']:g}s-{s['fps']}fps-{s['width']}x{s['height']}-g{s['gop']}-"
        f"{s['preset']}-n{s['noise']}-seed{seed}.mp4"
    )


def make_one(job: tuple[Path, int, dict]) -> Path:
    """Generate one clip (in a worker process) under a temporary name, then rename it."""
    from standins.video import make_clip  # imported here: the bench process never loads av

    path, seed, spec = job
    part = path.with_name(path.name + f".{os.getpid()}.part")
    make_clip(part, seed=seed, **spec)
    os.replace(part, path)
    return path


def ensure_clips(cache: Path, n: int, spec: dict) -> list[Path]:
    """Return n clips from the cache, generating the missing ones two at a time."""
    paths = [clip_path(cache, i, spec) for i in range(n)]
    missing = [(p, i, spec) for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        cache.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        print(f"generating {len(missing)} clip(s) into {cache} ...", flush=True)
        with ProcessPoolExecutor(2) as ex:
            list(ex.map(make_one, missing))
        print(f"generated in {time.perf_counter() - t0:.1f}s", flush=True)
    return paths


def build_store(root: Path, clips: list[Path]) -> Path:
    """Pack the clips into an item store like fetch@kinetics writes (whole clips, no window)."""
    from stages.core.executor import LocalExecutor
    from stages.core.store import Row, write_store

    rows = [
        Row(
            item_id=f"clip{i:02d}",
            source="kinetics",
            source_id=f"clip{i:02d}",
            url=f"file:clip{i:02d}.mp4",
            labels=["x"],
            status="ok",
            meta={"ext": ".mp4"},
        )
        for i in range(len(clips))
    ]
    by_id = {r.item_id: clips[i] for i, r in enumerate(rows)}
    write_store(
        root,
        rows,
        payload=lambda r: by_id[r.item_id],
        shard_bytes=1 << 30,
        executor=LocalExecutor(2),
    )
    return root


def run_ours(inp: Path, out: Path, num_frames: int | None, shard_bytes: int):
    """Run the extract-frames stage function; return seconds and its metrics."""
    from stages.core.executor import LocalExecutor
    from stages.core.store import Store
    from stages.families import Inputs
    from stages.pipeline.compose import CONF_DIR, group_defaults, source_defaults
    from stages.pipeline.executors import load_conf
    from stages.sources import load

    source = load("kinetics")
    local = LocalExecutor(cfg=load_conf(CONF_DIR, {"DSREPO_EXECUTOR": "local"}))
    frames = {"short_side": 256, "num_frames": num_frames, "quality": 90}
    cfg = source_defaults("kinetics", frames=frames)
    split = group_defaults("split")
    start = time.perf_counter()
    inputs = Inputs(source, cfg, Store(inp), out, shard_bytes, local, split)
    metrics = source.extractor().run(inputs)
    elapsed = time.perf_counter() - start
    return elapsed, metrics


def run_ffmpeg(ffmpeg: str, clips: list[Path], out: Path | None) -> tuple[float, list[int]]:
    """Run one ffmpeg per clip, one after another: the seed's JPEG export into out/<clip>/,
    or a decode-only pass when out is None. Return seconds and frames per clip."""
    counts = []
    start = time.perf_counter()
    for clip in clips:
        if out is None:
            cmd = [ffmpeg, "-i", str(clip), "-f", "null", "-"]
        else:
            dest = out / clip.stem
            dest.mkdir(parents=True)
            cmd = [ffmpeg, "-i", str(clip), "-vf", "scale=-1:256", "-q:v", "2"]
            cmd.append(str(dest / "image_%05d.jpg"))
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:].decode()}")
        found = FRAME.findall(proc.stderr)
        counts.append(int(found[-1]) if found else -1)
    return time.perf_counter() - start, counts


def jpeg_size(path: Path) -> tuple[int, int]:
    """Return (width, height) from a baseline JPEG's SOF0 marker."""
    data = path.read_bytes()
    i = 2
    while i < len(data):
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            return int.from_bytes(data[i + 7 : i + 9], "big"), height
        i += 2 + length
    raise ValueError(f"{path}: no SOF marker")


def cpu_seconds() -> float:
    """Return user + system CPU seconds of this process and its reaped children so far."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def busy_seconds() -> float:
    """Return the CPU seconds every process on the machine has used (0 without /proc/stat)."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wipe(path: Path) -> None:
    """Remove an output tree and flush, so the next run starts from the same disk state."""
    shutil.rmtree(path, ignore_errors=True)
    settle()


def main() -> None:
    """Run the benchmark and print frames_vs_ffmpeg and sample16_vs_decode as the last line."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clips", type=int, default=20, help="generated clips")
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length")
    ap.add_argument("--fps", type=int, default=30, help="clip frame rate")
    ap.add_argument("--width", type=int, default=640, help="clip width")
    ap.add_argument("--height", type=int, default=360, help="clip height")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per method")
    ap.add_argument("--cache", type=Path, default=CACHE, help="where generated clips are kept")
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 clips of 2 s, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.clips, args.seconds, args.rounds = 4, 2.0, 1
    sys.path.insert(0, str(ROOT))
    import imageio_ffmpeg

    from stages.core.parallel import default_workers
    from stages.core.store import Store
    from stages.pipeline.compose import group_defaults

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True)
    shard_bytes = group_defaults("store").shard_bytes
    spec = clip_spec(args)
    clips = ensure_clips(args.cache, args.clips, spec)
    per_clip = round(args.seconds * args.fps)
    total = args.clips * per_clip
    in_bytes = sum(p.stat().st_size for p in clips)
    print(
        f"{args.clips} clips of {args.seconds:g} s {args.width}x{args.height} {args.fps} fps "
        f"(x264 veryfast, gop 250), {in_bytes / 1e6:.1f} MB, {total} frames",
        flush=True,
    )
    print(f"{version.stdout.splitlines()[0]} ({ffmpeg})", flush=True)
    print(
        f"ours: extract_frames, {default_workers()} worker processes, q90 simplejpeg; "
        "seed: one ffmpeg per clip in turn, scale=-1:256 -q:v 2; decode: ffmpeg -f null -",
        flush=True,
    )
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at the start: {load} on {os.cpu_count()} cores", flush=True)
    labels = ("ours all", "seed ffmpeg", "ours 16", "decode only")
    secs: dict[str, list[float]] = {k: [] for k in labels}
    mb_clip: dict[str, list[float]] = {k: [] for k in labels}
    cpu: dict[str, list[float]] = {k: [] for k in labels}
    others: dict[str, list[float]] = {k: [] for k in labels}
    kb_frame: dict[str, float] = {}
    dims: dict[str, tuple[int, int]] = {}
    with bench_dir("bench-frames-") as tmp:
        inp = build_store(tmp / "clips", clips)
        for rnd in range(1, args.rounds + 1):
            for label in labels:
                out = tmp / f"out-{rnd}-{label.replace(' ', '-')}"
                settle()
                num = None if label == "ours all" else 16
                c0, b0 = cpu_seconds(), busy_seconds()
                if label.startswith("ours"):
                    s, m = run_ours(inp, out, num, shard_bytes)
                else:
                    s, counts = run_ffmpeg(ffmpeg, clips, out if label == "seed ffmpeg" else None)
                used = cpu_seconds() - c0  # the checks below are not counted
                other = max(0.0, busy_seconds() - b0 - used)
                if label.startswith("ours"):
                    want = args.clips * (num or per_clip)
                    if m["frames"] != want or m["clips_failed"]:
                        raise AssertionError(f"{label}: {m['frames']} frames, want {want}: {m}")
                    rows = [r for r in Store(out).rows() if r.status == "ok"]
                    decoded = {r.meta["clip"]: r.meta["clip_frames"] for r in rows}
                    if set(decoded.values()) != {per_clip}:
                        raise AssertionError(f"{label}: clips decoded to {set(decoded.values())}")
                    dims[label] = (rows[0].width, rows[0].height)
                    kb_frame[label] = m["bytes"] / m["frames"] / 1e3
                elif label == "seed ffmpeg":
                    files = tree_files(out)
                    if len(files) != total or set(counts) != {per_clip}:
                        raise AssertionError(f"seed: {len(files)} files, want {total}")
                    dims[label] = jpeg_size(next(iter(files.values())))
                    kb_frame[label] = tree_bytes(out) / total / 1e3
                elif set(counts) != {per_clip}:
                    raise AssertionError(f"decode only: frame counts {sorted(set(counts))}")
                written = tree_bytes(out) if out.exists() else 0
                secs[label].append(s)
                cpu[label].append(used)
                others[label].append(other)
                mb_clip[label].append(written / args.clips / 1e6)
                print(
                    f"round {rnd}  {label:12s} {s:7.2f} s  {total / s:7.0f} frames/s  "
                    f"{written / args.clips / 1e6:6.2f} MB/clip  cpu {used:6.2f} s  "
                    f"others {other:5.2f} s",
                    flush=True,
                )
                wipe(out)
            a = secs["seed ffmpeg"][-1] / secs["ours all"][-1]
            b = secs["decode only"][-1] / secs["ours 16"][-1]
            print(f"round {rnd}  ratios: all frames {a:.3f}  16-frame sampling {b:.3f}", flush=True)
    print(f"medians over {args.rounds} round(s), {args.clips} clips, {total} frames decoded:")
    print(
        f"  {'method':12s} {'seconds':>8s} {'frames/s':>9s} {'MB/clip':>8s} {'cpu s':>7s} "
        f"{'others':>7s}  output"
    )
    for label in labels:
        s = median(secs[label])
        if label in kb_frame:
            w, h = dims[label]
            n = 16 if label == "ours 16" else per_clip
            what = f"{n} JPEGs/clip {w}x{h}, {kb_frame[label]:.1f} KB/frame"
        else:
            what = "nothing (decode only)"
        print(
            f"  {label:12s} {s:8.2f} {total / s:9.0f} {median(mb_clip[label]):8.2f} "
            f"{median(cpu[label]):7.2f} {median(others[label]):7.2f}  {what}"
        )
    print(
        "  ours: q90 simplejpeg in tar shards (+ manifest); seed: ffmpeg mjpeg -q:v 2 files "
        f"(ours {kb_frame['ours all'] / kb_frame['seed ffmpeg']:.2f}x the seed's bytes/frame)"
    )
    frames_ratio = median(secs["seed ffmpeg"]) / median(secs["ours all"])
    sample_ratio = median(secs["decode only"]) / median(secs["ours 16"])
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at the end: {load} on {os.cpu_count()} cores (other work skews wall time)")
    print(
        "cpu s: CPU time of the method's processes; others: CPU time the rest of the machine "
        "used meanwhile"
    )
    print("targets: all frames >= 1.0x the seed, 16-frame sampling >= 0.9x decode-only")
    print(f"frames_vs_ffmpeg={frames_ratio:.3f} sample16_vs_decode={sample_ratio:.3f}")


if __name__ == "__main__":
    main()
