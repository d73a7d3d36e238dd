"""Compare the project's Downloader (libcurl) with the seed's ThreadPool(50)+urlretrieve and
with a plain urllib3 pool doing the same checks, against a local nginx, alternating rounds."""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool
from pathlib import Path

from _common import (
    ROOT,
    bench_dir,
    fmt_rate,
    median,
    settle,
    sha256_file,
    tree_files,
)

# Headline worker count: the pipeline's setting (conf/fetch/default.yaml, Config.workers). On a
# 2-core machine serving from loopback, --sweep puts W=4..64 within run-to-run noise.
HEADLINE_WORKERS = 16
BASELINE_THREADS = 50
URLLIB3_THREADS = 16
NGINX = "/usr/sbin/nginx"


def ensure_nginx() -> str:
    """Return the nginx binary, installing the Debian package if it is missing."""
    found = shutil.which("nginx") or (NGINX if os.path.exists(NGINX) else None)
    if found:
        return found
    print("nginx missing: apt-get install -y nginx", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "nginx"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)
    found = shutil.which("nginx") or (NGINX if os.path.exists(NGINX) else None)
    if not found:
        raise SystemExit("nginx is still missing after apt-get install")
    return found


def make_jpegs(n_base: int, seed: int = 0) -> list[bytes]:
    """Encode n_base distinct noisy-gradient 640x480 JPEGs of roughly 120 KB each."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = 480, 640
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(n_base):
        a, b, c = rng.uniform(-1, 1, (3, 3))
        base = np.stack(
            [
                128 + 100 * np.sin(a[0] * x / 97 + a[1] * y / 71 + a[2] * 6),
                128 + 100 * np.sin(b[0] * x / 53 + b[1] * y / 89 + b[2] * 6),
                128 + 100 * np.sin(c[0] * x / 79 + c[1] * y / 61 + c[2] * 6),
            ],
            -1,
        )
        img = np.clip(base + rng.normal(0, 21, (h, w, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def with_comment(jpeg: bytes, text: str) -> bytes:
    """Return the JPEG with a COM segment holding text right after SOI (still valid)."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def write_files(docroot: Path, n: int, n_base: int) -> dict[str, tuple[int, str]]:
    """Write n distinct JPEGs under docroot/img; return name -> (size, sha256)."""
    bases = make_jpegs(min(n_base, n))
    (docroot / "img").mkdir(parents=True)
    expected = {}
    for i in range(n):
        data = with_comment(bases[i % len(bases)], f"bench file {i:07d}")
        assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
        name = f"{i:06d}.jpg"
        (docroot / "img" / name).write_bytes(data)
        expected[name] = (len(data), hashlib.sha256(data).hexdigest())
    return expected


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def world_traversable(path: Path) -> bool:
    """Tell whether every directory from / down to path is world-executable."""
    for p in [path, *path.parents]:
        if not os.stat(p).st_mode & 0o001:
            return False
    return True


def nginx_conf(tmp: Path, docroot: Path, port: int) -> Path:
    """Write a foreground nginx config serving docroot on 127.0.0.1:port."""
    run = tmp / "nginx"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (run / sub).mkdir(parents=True, exist_ok=True)
    user = ""
    if os.geteuid() == 0 and not world_traversable(docroot):
        user = "user root;"  # workers drop to nobody/www-data, who could not read docroot
    conf = run / "nginx.conf"
    conf.write_text(f"""{user}
worker_processes 2;
daemon off;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000;
    keepalive_timeout 75s;
    types {{ image/jpeg jpg jpeg; }}
    default_type application/octet-stream;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {docroot};
    }}
}}
""")
    return conf


def start_nginx(binary: str, conf: Path, port: int, probe: str) -> subprocess.Popen:
    """Start nginx in the foreground as a child; return once it serves probe."""
    run = conf.parent
    with open(run / "stderr.log", "wb") as err:
        proc = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(run), "-e", str(run / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    url = f"http://127.0.0.1:{port}/{probe}"
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"nginx exited ({proc.returncode}): {(run / 'stderr.log').read_text()}"
                f"{(run / 'error.log').read_text() if (run / 'error.log').exists() else ''}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                resp.read()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)


def stop_nginx(proc: subprocess.Popen) -> None:
    """Stop our nginx by its PID: TERM (fast shutdown), then KILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()  # SIGTERM: fast shutdown of master and workers
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_baseline(urls: list[str], dest: Path) -> float:
    """Download with ThreadPool(50) + urlretrieve into dest; return seconds."""
    dest.mkdir(parents=True)

    def get(url: str) -> None:
        urllib.request.urlretrieve(url, dest / url.rsplit("/", 1)[1])

    start = time.perf_counter()
    with ThreadPool(BASELINE_THREADS) as pool:
        list(pool.imap(get, urls))
    return time.perf_counter() - start


def check_baseline(dest: Path, expected: dict[str, tuple[int, str]]) -> None:
    """Fail unless dest holds exactly the expected files with matching size and sha256."""
    files = tree_files(dest)
    if set(files) != set(expected):
        raise AssertionError(f"baseline: {len(files)} files, want {len(expected)}")
    for name, (size, sha) in expected.items():
        p = files[name]
        if p.stat().st_size != size or sha256_file(p) != sha:
            raise AssertionError(f"baseline: {name} differs from the source")


def run_urllib3(urls: list[str], dest: Path, threads: int) -> float:
    """Download with a urllib3 PoolManager on `threads` threads, verifying like ours."""
    import urllib3

    from stages.net.verify import check_structure

    objects, tmp = dest / "objects", dest / "tmp"
    for i in range(256):
        (objects / f"{i:02x}").mkdir(parents=True)
    tmp.mkdir()
    pool = urllib3.PoolManager(
        maxsize=threads,
        block=True,
        retries=urllib3.Retry(3, backoff_factor=0.5),
        timeout=urllib3.Timeout(connect=10.0, read=30.0),
    )

    def get(item: tuple[int, str]) -> None:
        i, url = item
        resp = pool.request(
            "GET", url, preload_content=False, headers={"Accept-Encoding": "identity"}
        )
        part, digest, size, head, tail = f"{tmp}/{i}.part", hashlib.sha256(), 0, b"", b""
        with open(part, "wb") as fh:
            for chunk in resp.stream(1 << 18):
                if size < 16:
                    head = (head + chunk[:16])[:16]
                tail = (tail + chunk[-64:])[-64:]
                fh.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        resp.release_conn()
        length = resp.headers.get("Content-Length")
        if resp.status != 200 or (length is not None and int(length) != size):
            raise AssertionError(f"urllib3: {url}: {resp.status}, {size} of {length} bytes")
        if check_structure("jpeg", head, tail):
            raise AssertionError(f"urllib3: {url}: not a whole JPEG")
        sha = digest.hexdigest()
        os.replace(part, objects / sha[:2] / sha)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(get, enumerate(urls)))
    elapsed = time.perf_counter() - start
    pool.clear()
    return elapsed


def check_cache(dest: Path, expected: dict[str, tuple[int, str]]) -> None:
    """Fail unless dest/objects holds exactly the expected content, named by sha256."""
    found = {p.name: p.stat().st_size for p in (dest / "objects").rglob("*") if p.is_file()}
    want = {sha: size for size, sha in expected.values()}
    if found != want:
        raise AssertionError(f"{dest.name}: {len(found)} objects, want {len(want)}")


def run_ours(urls: list[str], cache: Path, workers: int) -> tuple[float, dict]:
    """Download with stages.net.download.Downloader into a fresh cache; return seconds, results."""
    from stages.core.executor import LocalExecutor
    from stages.net.download import Downloader
    from stages.pipeline.compose import group_defaults

    cfg = group_defaults("fetch", workers=workers)
    start = time.perf_counter()
    dl = Downloader(cfg, cache_dir=cache, ledger_name="bench", executor=LocalExecutor(2))
    results = dl.fetch_all(urls)
    dl.close()
    elapsed = time.perf_counter() - start
    return elapsed, results


def check_ours(results: dict, cache: Path, base: str, expected: dict) -> None:
    """Fail unless every URL is ok with the source's size and sha256, stored in the cache."""
    if len(results) != len(expected):
        raise AssertionError(f"ours: {len(results)} results, want {len(expected)}")
    for name, (size, sha) in expected.items():
        r = results[f"{base}/{name}"]
        if r.status != "ok" or r.bytes != size or r.sha256 != sha:
            raise AssertionError(f"ours: {name}: {r}")
        obj = cache / "objects" / sha[:2] / sha
        if obj.stat().st_size != size:
            raise AssertionError(f"ours: {name}: cached object has the wrong size")
    if len({r.sha256 for r in results.values()}) != len(expected):
        raise AssertionError("ours: files are not all distinct")


def main() -> None:
    """Run the benchmark and print fetch_speedup as the last line."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=5000, help="JPEG files to serve")
    ap.add_argument("--distinct", type=int, default=300, help="distinct base JPEGs to encode")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per method")
    ap.add_argument("--workers", type=int, default=HEADLINE_WORKERS, help="Downloader workers")
    ap.add_argument("--sweep", action="store_true", help="also time other worker counts")
    ap.add_argument("--sweep-workers", default="8,16,32", help="worker counts for --sweep")
    ap.add_argument("--quick", action="store_true", help="smoke run: 300 files, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.files, args.distinct, args.rounds = 300, 30, 1
    sweep = [int(w) for w in args.sweep_workers.split(",")] if args.sweep else []
    if sweep and args.quick:
        sweep = sweep[:2]
    sys.path.insert(0, str(ROOT))

    binary = ensure_nginx()
    version = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
    with bench_dir("bench-fetch-") as tmp:
        os.chmod(tmp, 0o755)
        docroot = tmp / "www"
        t0 = time.perf_counter()
        expected = write_files(docroot, args.files, args.distinct)
        total = sum(size for size, _ in expected.values())
        print(
            f"generated {len(expected)} JPEGs ({args.distinct} distinct images), "
            f"{total / 1e6:.1f} MB, mean {total / len(expected) / 1e3:.1f} KB "
            f"in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )
        port = free_port()
        conf = nginx_conf(tmp, docroot, port)
        proc = start_nginx(binary, conf, port, "img/000000.jpg")
        try:
            base = f"http://127.0.0.1:{port}/img"
            urls = [f"{base}/{name}" for name in sorted(expected)]
            print(f"{version} (pid {proc.pid}) on 127.0.0.1:{port}, 2 workers", flush=True)
            print(
                f"baseline: ThreadPool({BASELINE_THREADS}) + urlretrieve; urllib3: "
                f"PoolManager on {URLLIB3_THREADS} threads, sha256 + JPEG check + rename; "
                f"ours: Downloader(workers={args.workers}) on libcurl, same checks + ledger",
                flush=True,
            )
            n = len(urls)
            times: dict[str, list[float]] = {"baseline": [], "urllib3": []}
            cpu: dict[str, list[float]] = {"baseline": [], "urllib3": []}
            worker_counts = [args.workers] + [w for w in sweep if w != args.workers]
            for w in worker_counts:
                times[f"ours W={w}"] = []
                cpu[f"ours W={w}"] = []
            need = total * args.rounds * len(times) * 1.1
            if shutil.disk_usage(tmp).free < need + (1 << 30):
                raise SystemExit(f"need {need / 1e9:.1f} GB free under {tmp.parent}")
            for rnd in range(1, args.rounds + 1):
                for i, label in enumerate(times):
                    # Outputs stay until the end: on ext4 without a journal, creating files soon
                    # after mass deletes is slow (inode allocation skips recently freed inodes).
                    out = tmp / f"out-{rnd}-{i}"
                    settle()
                    r0 = resource.getrusage(resource.RUSAGE_SELF)
                    if label == "baseline":
                        secs = run_baseline(urls, out)
                    elif label == "urllib3":
                        secs = run_urllib3(urls, out, URLLIB3_THREADS)
                    else:
                        secs, results = run_ours(urls, out, int(label.split("=")[1]))
                    r1 = resource.getrusage(resource.RUSAGE_SELF)
                    if label == "baseline":
                        check_baseline(out, expected)
                    elif label == "urllib3":
                        check_cache(out, expected)
                    else:
                        check_ours(results, out, base, expected)
                    used = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
                    times[label].append(secs)
                    cpu[label].append(used)
                    print(
                        f"round {rnd}  {label:12s} {fmt_rate(n, total, secs)}  "
                        f"client cpu {used:5.2f} s",
                        flush=True,
                    )
        finally:
            stop_nginx(proc)
        print(f"medians over {args.rounds} round(s), {n} files, {total / 1e6:.1f} MB:")
        for label, ts in times.items():
            print(
                f"  {label:12s} {fmt_rate(n, total, median(ts))}  "
                f"client cpu {median(cpu[label]):5.2f} s"
            )
        print(f"verified: every run produced {n} files matching the sources' sizes and sha256")
        base_s = median(times["baseline"])
        pool_s = median(times["urllib3"])
        ours_s = median(times[f"ours W={args.workers}"])
        print(
            f"baseline {base_s:.2f} s, urllib3 {pool_s:.2f} s / ours (W={args.workers}) "
            f"{ours_s:.2f} s"
        )
    print(f"fetch_speedup={base_s / ours_s:.3f} vs_urllib3={pool_s / ours_s:.3f}")


if __name__ == "__main__":
    main()
