"""Offline demo: stand-in LILA server, `dvc repro`, `dvc push`, per-class summary."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
N_IMAGES = 120


def standin_port() -> int:
    """Return the port the LILA conf's index_url points at (the stand-in must listen there)."""
    conf = yaml.safe_load((ROOT / "conf" / "source" / "lila.yaml").read_text(encoding="utf-8"))
    url = urlsplit(conf["fetch"]["index_url"])
    if url.hostname not in ("127.0.0.1", "localhost") or url.port is None:
        raise SystemExit(f"make demo needs fetch.index_url on loopback, not {url.geturl()!r}")
    return url.port


def start_standin() -> subprocess.Popen:
    """Start the stand-in LILA server on the port conf/source/lila.yaml points at."""
    port = standin_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "standins.lila",
            "serve",
            "--root",
            str(DEMO / "standin"),
            "--port",
            str(port),
            "--generate",
            str(N_IMAGES),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise SystemExit(f"the stand-in server did not start (port {port} busy?): {line!r}")
    print(line.strip(), flush=True)
    return proc


def dvc(*args: str) -> None:
    """Run a DVC command in the project, failing loudly."""
    print(f"$ dvc {' '.join(args)}", flush=True)
    subprocess.run([shutil.which("dvc") or "dvc", *args], cwd=ROOT, check=True)


def summary_table() -> str:
    """Return a per-class table of the built dataset from the stage metrics."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    lines = []
    for source in params["sources"]:
        m = {}
        for stage in ("fetch", "clean", "export"):
            path = ROOT / "data" / source / "metrics" / f"{stage}.json"
            m[stage] = json.loads(path.read_text()) if path.exists() else {}
        sel = m["fetch"].get("selection", {})
        head = f"{'class':<24}{'available':>10}{'selected':>10}{'fetched':>10}{'clean':>8}"
        head += f"{'exported':>10}"
        lines += [f"source {source}: {sel.get('dataset', '')}", head, "-" * len(head)]
        for name in params["sources"][source].get("classes") or m["fetch"].get("classes", {}):
            lines.append(
                f"{name:<24}{sel.get('available', {}).get(name, 0):>10}"
                f"{sel.get('selected', {}).get(name, 0):>10}"
                f"{m['fetch']['classes'].get(name, 0):>10}"
                f"{m['clean'].get('classes', {}).get(name, 0):>8}"
                f"{m['export'].get('classes', {}).get(name, 0):>10}"
            )
        lines.append(
            f"items: fetched {m['fetch'].get('ok', 0)} ok / {m['fetch'].get('items', 0)}, "
            f"clean {m['clean'].get('items_out', 0)}, exported {m['export'].get('items', 0)} "
            f"in {m['export'].get('shards', 0)} npz shard(s), "
            f"{m['fetch'].get('bytes', 0) / 1e6:.1f} MB of images"
        )
    return "\n".join(lines)


def main() -> int:
    """Build the demo dataset end to end and push it."""
    DEMO.mkdir(exist_ok=True)
    os.environ.setdefault("DSREPO_CACHE_DIR", str(DEMO / "cache"))
    server = start_standin()
    try:
        dvc("repro")
        dvc("push")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
    print()
    print(summary_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
