"""Share helpers between the benchmark scripts."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@contextlib.contextmanager
def bench_dir(prefix: str) -> Iterator[Path]:
    """Yield a fresh temp dir under $BENCH_DIR (else the system temp dir); remove it after."""
    parent = os.environ.get("BENCH_DIR") or None
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.sync()  # write back freed inodes now, so later file creation is not slowed


def sha256_file(path: Path) -> str:
    """Return the sha256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def tree_files(root: Path) -> dict[str, Path]:
    """Map each regular file's path relative to root to its Path."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = p
    return out


def tree_bytes(root: Path) -> int:
    """Return the total size of the regular files under root."""
    return sum(p.stat().st_size for p in tree_files(root).values())


def median(values: list[float]) -> float:
    """Return the median of a non-empty list."""
    return statistics.median(values)


def settle() -> None:
    """Flush dirty pages so one timed run does not pay for the previous run's writeback."""
    os.sync()


def timed(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> float:
    """Run a command (failing loudly on error) and return its wall-clock seconds."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
            f"{proc.stderr[-4000:]}"
        )
    return elapsed


def fmt_rate(n: int, nbytes: int, seconds: float) -> str:
    """Format a count and byte volume over a time as files/s and MB/s."""
    return f"{seconds:7.2f} s  {n / seconds:8.0f} files/s  {nbytes / 1e6 / seconds:7.1f} MB/s"


@contextlib.contextmanager
def tator_standin(*args: str) -> Iterator[str]:
    """Run the Tator stand-in (`serve --port 0 ARGS`) in its own process, since a remote
    server does not share our GIL; yield its URL."""
    cmd = [sys.executable, "-m", "standins.tator", "serve", "--port", "0", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if "serving" not in line:
            raise SystemExit(f"the Tator stand-in did not start: {line!r}")
        yield line.split()[-1]
    finally:
        proc.terminate()
        proc.wait(30)


def dvc_env(tmp: Path) -> dict:
    """Return an environment that isolates DVC's global, system and site dirs inside tmp."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    for var, sub in (
        ("DVC_SITE_CACHE_DIR", "site-cache"),
        ("DVC_GLOBAL_CONFIG_DIR", "dvc-global"),
        ("DVC_SYSTEM_CONFIG_DIR", "dvc-system"),
    ):
        (tmp / sub).mkdir(exist_ok=True)
        env[var] = str(tmp / sub)
    env["DVC_NO_ANALYTICS"] = "1"
    env.update(
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@localhost",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@localhost",
    )
    return env


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    """Run an untimed set-up command; fail loudly; return stdout."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout
