"""Benchmark the quality gates' near-duplicate search and perceptual hashing.

100,000 random 64-bit codes with 1,000 planted near-duplicate pairs (0..max_distance bits
apart, the shipped conf's distance): the gates' faiss multi-index hash search against the
exhaustive baseline, every pair compared once with vectorised numpy (XOR + popcount), in the
same run; both must find the same pairs. Then the perceptual hashing of 10,000 JPEG decodes
as clean-annotations does it (decode, hash, in its thread pool).

Last line: neardup_speedup=<baseline s / ours s> pairs_equal=<0|1>.
"""

from __future__ import annotations

import argparse
import io
import time

import _common  # noqa: F401 (puts the repo on sys.path)
import numpy as np
from PIL import Image

from stages.core.gates import near_pairs, plan
from stages.core.parallel import pmap
from stages.families.clean import inspect_image
from stages.pipeline.compose import group_defaults


def planted_codes(n: int, pairs: int, radius: int, seed: int = 0) -> tuple[np.ndarray, set]:
    """Return n random 8-byte codes, `pairs` of them copies of others with <= radius bits
    flipped, and the planted (i, j) pairs."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    order = rng.permutation(n)
    planted = set()
    for a, b in zip(order[:pairs].tolist(), order[pairs : 2 * pairs].tolist(), strict=True):
        bits = np.unpackbits(codes[a])
        bits[rng.choice(64, rng.integers(0, radius + 1), replace=False)] ^= 1
        codes[b] = np.packbits(bits)
        planted.add((min(a, b), max(a, b)))
    return codes, planted


def exhaustive(codes: np.ndarray, radius: int, block: int = 1024) -> set:
    """Return all pairs within radius, comparing every pair once (XOR + popcount, numpy)."""
    words = codes.view(">u8").ravel()
    out = set()
    for start in range(0, len(words), block):
        rows = words[start : start + block]
        d = np.bitwise_count(rows[:, None] ^ words[None, start:])
        i, j = np.nonzero(d <= radius)
        keep = i < j  # j counts from `start`: the block's own upper triangle, then the rest
        out.update(zip((i[keep] + start).tolist(), (j[keep] + start).tolist(), strict=True))
    return out


def jpegs(n: int, seed: int = 1) -> list[bytes]:
    """Return n distinct 320x240 JPEGs (smooth random scenes with noise, like photos)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(coarse).resize((320, 240), Image.Resampling.BICUBIC))
        img = np.clip(img.astype(np.int16) + rng.integers(-12, 13, img.shape), 0, 255)
        buf = io.BytesIO()
        Image.fromarray(img.astype(np.uint8)).save(buf, format="JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def main() -> None:
    """Run the search and hashing benchmarks."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--codes", type=int, default=100_000)
    ap.add_argument("--pairs", type=int, default=1_000)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)  # as in the stage, which runs with OMP_NUM_THREADS=1
    gates = group_defaults("gates")
    r = gates.max_distance
    codes, planted = planted_codes(args.codes, args.pairs, r)
    tables, width, flips = plan(len(codes), 64, r)
    print(
        f"{args.codes:,} codes, {args.pairs:,} planted pairs, max_distance {r}: "
        f"{tables} tables of {width} bits, {flips} flip(s) per probe",
        flush=True,
    )
    times, found = [], set()
    for _ in range(args.rounds):
        t = time.perf_counter()
        got, _ = near_pairs(codes, r)
        times.append(time.perf_counter() - t)
        found = {(i, j) for i, j, _ in got.tolist()}
    ours = min(times)
    print(
        f"ours (faiss multi-index hash, one thread): best {ours:.3f} s of {args.rounds}, "
        f"{len(found):,} pairs"
    )
    t = time.perf_counter()
    base = exhaustive(codes, r)
    baseline = time.perf_counter() - t
    print(f"baseline (numpy XOR + popcount, all pairs once): {baseline:.2f} s, {len(base):,} pairs")
    equal = found == base and planted <= found
    print(f"planted pairs found: {len(planted & found):,} of {len(planted):,}; sets equal: {equal}")

    data = jpegs(args.images)
    mb = sum(map(len, data)) / 1e6
    t = time.perf_counter()
    hashed = list(pmap(lambda d: inspect_image(d, True, gates), data))
    spent = time.perf_counter() - t
    assert all(h is not None for h in hashed)
    distinct = len({h[1] for h in hashed})
    print(
        f"hashing {args.images:,} JPEG decodes (320x240, {mb:.0f} MB, {gates.hash.value} "
        f"{gates.hash_size**2} bits): {spent:.2f} s, {args.images / spent:,.0f} images/s, "
        f"{distinct:,} distinct hashes"
    )
    print(f"neardup_speedup={baseline / ours:.3f} pairs_equal={int(equal)}")


if __name__ == "__main__":
    main()
