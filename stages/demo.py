"""Offline demo: stand-ins for every source, `dvc repro`, `dvc push`, per-class summary;
`serve` keeps the stand-ins up afterwards for experiments (`make serve`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
N_IMAGES = 120
# The Tator stand-in accepts this token; the demo exports it as TATOR_TOKEN for its own run
# (a real token in your environment is never sent to the stand-in).
DEMO_TATOR_TOKEN = "demo-token"
DEMO_FIGURE8_KEY = "demo-key"  # likewise, as FIGURE_EIGHT_KEY for the Figure Eight stand-in


# Stand-ins the demo starts: module, the conf file and key whose URL names its port, and
# the serve arguments after --root/--port.
STANDINS = (
    ("standins.lila", "lila", ("fetch", "index_url"), ["--generate", str(N_IMAGES)]),
    ("standins.kinetics", "kinetics", ("fetch", "annotations"), ["--generate"]),
    ("standins.tator", "tator", ("fetch", "host"), ["--token", DEMO_TATOR_TOKEN, "--media", "6"]),
    ("standins.figure8", "figure8", ("fetch", "api"), ["--key", DEMO_FIGURE8_KEY]),
    # The Tator project the video folder is imported into; its annotators label each new
    # media, and labels@videodir reads them back. Kept in .demo/standin/videodir/.
    (
        "standins.tator",
        "videodir",
        ("import_to", "tator", "host"),
        ["--token", DEMO_TATOR_TOKEN, "--empty", "--stable-ids", "--annotate"],
    ),
)


def standin_port(source: str, key: tuple[str, ...]) -> int:
    """Return the loopback port a source's conf points at (its stand-in must listen there)."""
    conf = yaml.safe_load((ROOT / "conf" / "source" / f"{source}.yaml").read_text("utf-8"))
    for part in key:
        conf = conf[part]
    url = urlsplit(conf)
    if url.hostname not in ("127.0.0.1", "localhost") or url.port is None:
        raise SystemExit(f"make demo needs {source}'s {'.'.join(key)} on loopback, not {conf!r}")
    return url.port


def start_standin(module: str, source: str, key: tuple[str, ...], extra: list[str]):
    """Start one stand-in server on the port its source's conf points at."""
    port = standin_port(source, key)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            module,
            "serve",
            "--root",
            str(DEMO / "standin" / source),
            "--port",
            str(port),
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise SystemExit(f"the {source} stand-in did not start (port {port} busy?): {line!r}")
    print(line.strip(), flush=True)
    return proc


def dvc(*args: str) -> None:
    """Run a DVC command in the project, failing loudly."""
    print(f"$ dvc {' '.join(args)}", flush=True)
    subprocess.run([shutil.which("dvc") or "dvc", *args], cwd=ROOT, check=True)


def report(source: str, stage: str) -> dict:
    """Return a stage's report (everything it counted), or {} if it has not run."""
    path = ROOT / "data" / source / "reports" / f"{stage}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def summary_table() -> str:
    """Return a per-class table of the built dataset from the stage reports."""
    from stages.clean_annotations import explain

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = ("fetch", "clean", "export", "import", "labels")
    reports = {s: {stage: report(s, stage) for stage in stages} for s in params["sources"]}
    lines = []
    for source in params["sources"]:
        m = reports[source]
        sel = m["fetch"].get("selection", {})
        fetched = m["fetch"].get("classes", {})
        # Sources without a selection step select what they fetch. A cap bounds the items
        # picked for a class; items picked for another class may carry its label too.
        picked, labelled = sel.get("picked", fetched), sel.get("selected", fetched)
        head = f"{'class':<24}{'available':>10}{'picked':>8}{'selected':>10}{'fetched':>10}"
        head += f"{'clean':>8}{'exported':>10}"
        lines += [f"source {source}: {sel.get('dataset', '')}", head, "-" * len(head)]
        for name in params["sources"][source].get("classes") or fetched:
            lines.append(
                f"{name:<24}{sel.get('available', fetched).get(name, 0):>10}"
                f"{picked.get(name, 0):>8}{labelled.get(name, 0):>10}"
                f"{fetched.get(name, 0):>10}"
                f"{m['clean'].get('classes', {}).get(name, 0):>8}"
                f"{m['export'].get('classes', {}).get(name, 0):>10}"
            )
        lines.append(
            f"items: fetched {m['fetch'].get('ok', 0)} ok / {m['fetch'].get('items', 0)}, "
            f"clean {m['clean'].get('clips_out', m['clean'].get('items_out', 0))}, "
            f"exported {m['export'].get('items', 0)} "
            f"in {m['export'].get('shards', 0)} npz shard(s), "
            f"{m['fetch'].get('bytes', 0) / 1e6:.1f} MB fetched"
        )
        if m["fetch"].get("reasons"):
            lines.append(
                "not fetched: " + ", ".join(f"{k} {v}" for k, v in m["fetch"]["reasons"].items())
            )
        if "items_in" in m["clean"]:
            lines.append(f"clean: {explain(m['clean'], params['clean']['min_box_size'])}")
    lines += ["", "(selected: items with the label; picked: chosen for it, what a cap bounds)"]
    lines += ["", f"{'splits (items)':<24}" + "".join(f"{n:>10}" for n in params["split"]["names"])]
    for source in params["sources"]:
        splits = reports[source]["clean"].get("splits")
        if splits:  # sources whose clean stage assigns splits
            lines.append(
                f"{source:<24}"
                + "".join(f"{splits['items'].get(n, 0):>10}" for n in params["split"]["names"])
            )
    gates = params["gates"]
    cols = ("duplicate", "label_conflict", "cross_split")
    lines += [
        "",
        f"{'quality gates (pairs)':<24}{'dupes':>8}{'conflicts':>10}{'leaks':>8}"
        f"{'in group':>10}{'dropped':>9}  (max distance {gates['max_distance']} bits)",
    ]
    for source in params["sources"]:
        g = reports[source]["clean"].get("gates")
        if g:
            t = g["totals"]
            state = (
                "tripped: " + ", ".join(x["gate"] for x in g["tripped"]) if g["tripped"] else "pass"
            )
            lines.append(
                f"{source:<24}{t[cols[0]]:>8}{t[cols[1]]:>10}{t[cols[2]]:>8}"
                f"{g['pairs_within_group']:>10}{g['dropped_exact_duplicates']:>9}  {state}"
            )
    lines.append("(report: data/<source>/plots/gates.csv, contact sheet: gates.png)")
    for source in params.get("import_sources") or {}:
        imp, lab = reports[source]["import"], reports[source]["labels"]
        target = params["sources"][source]["import_to"]["target"]
        lines.append(
            f"import@{source}: {imp['files']} files to {target} ({imp['shards']} shard(s), "
            f"job complete: {bool(imp['job_complete'])}); labels@{source}: {lab['labels']} "
            f"labels on {lab['files_labelled']} files -> data/{source}/labels/labels.json, "
            ".csv, .xml"
        )
    lines += ["", "Metrics (headline numbers): data/<source>/metrics/; all counts: reports/."]
    return "\n".join(lines)


# Sources of local files: each input folder and the stand-in command that writes it.
INPUTS = (
    ("standins.video", "folder", "data/videodir/input"),
    ("standins.figure8", "input", "data/figure8/input"),
)


def write_inputs() -> None:
    """Write the local-input sources' folders (deterministic) and track them with DVC."""
    # Sources of local files read data/<source>/input: the video folder's cameras, and the
    # raw frames and pre-annotation logs of the Figure Eight job. Their .dvc files are
    # committed; `dvc add` puts the bytes in DVC's cache so `dvc push` sends them too.
    for module, command, folder in INPUTS:
        subprocess.run(
            [sys.executable, "-m", module, command, "--root", folder], cwd=ROOT, check=True
        )
    dvc("add", "--quiet", *(folder for _, _, folder in INPUTS))


@contextlib.contextmanager
def standins():
    """Run every stand-in on the port its source's conf names, from the state in .demo/."""
    servers = []
    try:
        for spec in STANDINS:
            servers.append(start_standin(*spec))
        yield servers
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            server.wait(timeout=10)


def build() -> int:
    """Build the demo dataset end to end and push it."""
    DEMO.mkdir(exist_ok=True)
    os.environ.setdefault("DSREPO_CACHE_DIR", str(DEMO / "cache"))
    os.environ["TATOR_TOKEN"] = DEMO_TATOR_TOKEN
    os.environ["FIGURE_EIGHT_KEY"] = DEMO_FIGURE8_KEY
    write_inputs()
    with standins():
        dvc("repro")
        dvc("push")
    print()
    print(summary_table())
    return 0


def serve() -> int:
    """Serve every stand-in until Ctrl-C, for `dvc exp run` and `dvc repro` after the demo."""
    DEMO.mkdir(exist_ok=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with standins():
        print(
            "\nThe stand-ins accept these secrets; in another shell, before `dvc exp run`:\n"
            f"  export TATOR_TOKEN={DEMO_TATOR_TOKEN} FIGURE_EIGHT_KEY={DEMO_FIGURE8_KEY}\n"
            "Ctrl-C stops them.",
            flush=True,
        )
        while not stop.wait(1.0):  # a plain wait() may not wake for a signal handler
            pass
    print("stand-ins stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Build the demo (no argument) or serve its stand-ins (`serve`)."""
    ap = argparse.ArgumentParser(prog="python -m stages.demo", description=__doc__)
    ap.add_argument("command", nargs="?", choices=["build", "serve"], default="build")
    args = ap.parse_args(argv)
    return serve() if args.command == "serve" else build()


if __name__ == "__main__":
    sys.exit(main())
