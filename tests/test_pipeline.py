"""End to end with real DVC: repro, conf edits, experiments, push/clone/pull, crashes."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from stages.core.store import Store
from tests.conftest import BIN, git, make_project

pytestmark = pytest.mark.slow


def tree_digest(root: Path) -> dict[str, str]:
    """Map every file under root to its sha256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".gitignore" not in p.name
    }


def ran(proc) -> list[str]:
    """Return the stages a dvc repro/exp run actually ran."""
    out = proc.stdout + proc.stderr
    return sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running"))


def test_build_push_clone_pull(project, tmp_path, standin_root):
    proc = project.dvc("repro")
    assert ran(proc) == ["clean-annotations@lila", "compose", "export-npz@lila", "fetch@lila"]
    data = project.path / "data" / "lila"
    fetch = json.loads((data / "reports" / "fetch.json").read_text())
    assert fetch["ok"] == fetch["items"] > 0 and fetch["failed"] == 0
    # The metrics file holds the headline numbers, named under the source.
    headline = json.loads((data / "metrics" / "fetch.json").read_text())
    assert headline == {"lila": {"fetched": fetch["ok"], "failed": 0, "missing": 0, "corrupt": 0}}
    # Every fetched payload is the byte-identical source file.
    files = json.loads((standin_root / "_datasets.json").read_text())[0]["files"]
    store = Store(data / "fetch")
    for row, payload in store.iter_payloads():
        rel = "nacti-unzipped/" + row.meta["file_name"]
        assert hashlib.sha256(payload).hexdigest() == files[rel] == row.sha256
    clean = json.loads((data / "reports" / "clean.json").read_text())
    shards = sorted((data / "npz").glob("*/shard-*.npz"))
    assert {p.parent.name for p in shards} == set(clean["splits"]["items"]) - {
        s for s, n in clean["splits"]["items"].items() if n == 0
    }
    ids = []
    for path in shards:
        npz = np.load(path)  # plain numpy, no pickle
        assert npz["X"].shape[1:] == (224, 224, 3) and npz["X"].dtype == np.uint8
        assert len(npz["y"]) == len(npz["ids"])
        assert npz["box_offsets"][-1] == len(npz["boxes"]) == len(npz["box_labels"])
        ids += [(path.parent.name, i) for i in npz["ids"]]
    assert len(ids) == clean["items_out"]
    # Each item is in the split clean assigned, and a location's images share one split.
    rows = {r.item_id: r for r in Store(data / "clean").rows()}
    assert all(rows[i].split == split for split, i in ids)
    by_location: dict = {}
    for r in rows.values():
        by_location.setdefault(r.meta["location"], set()).add(r.split)
    assert all(len(s) == 1 for s in by_location.values()) and len(by_location) > 1

    project.dvc("push")
    project.git("add", "-A")
    project.git("commit", "-qm", "build")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project.path), str(clone))
    other = type(project)(clone, tmp_path / "other-cache")
    other.dvc("pull")
    assert tree_digest(clone / "data") == tree_digest(project.path / "data")
    status = other.dvc("status")
    assert "up to date" in status.stdout
    again = other.dvc("repro")
    assert ran(again) == []


def test_conf_edits_rerun_exactly_the_changed_stages(project):
    project.dvc("repro")
    project.set_conf("conf/export/default.yaml", "height: 224", "height: 64")
    assert ran(project.dvc("repro")) == ["compose", "export-npz@lila"]
    npz = np.load(sorted((project.path / "data/lila/npz").glob("*/shard-00000.npz"))[0])
    assert npz["X"].shape[1:3] == (64, 224)
    project.set_conf("conf/clean/default.yaml", "min_box_size: 2.0", "min_box_size: 400.0")
    assert ran(project.dvc("repro")) == ["clean-annotations@lila", "compose", "export-npz@lila"]
    project.set_conf("conf/source/lila.yaml", "cap: null", "cap: 4")
    assert ran(project.dvc("repro")) == [
        "clean-annotations@lila",
        "compose",
        "export-npz@lila",
        "fetch@lila",
    ]
    assert json.loads((project.path / "data/lila/reports/fetch.json").read_text())["items"] <= 28
    # A comment-only edit changes no setting: only compose runs.
    project.set_conf("conf/export/default.yaml", "# export-npz settings.", "# npz settings.")
    assert ran(project.dvc("repro")) == ["compose"]
    # Neither does tuning the downloader: it cannot change what a successful fetch writes.
    project.set_conf("conf/fetch/default.yaml", "workers: 16", "workers: 4")
    assert ran(project.dvc("repro")) == ["compose"]


def test_experiments_and_metrics(project):
    project.dvc("repro")
    project.git("add", "-A")
    project.git("commit", "-qm", "baseline")
    project.dvc("exp", "run", "-n", "cap3", "-S", "conf/source/lila.yaml:fetch.cap=3")
    show = json.loads(project.dvc("exp", "show", "--json").stdout)
    exps = [e for rev in show for e in (rev.get("experiments") or [])]
    cap3 = [e for e in exps if e.get("name") == "cap3"][0]["revs"][0]["data"]
    assert cap3["params"]["params.yaml"]["data"]["sources"]["lila"]["fetch"]["cap"] == 3
    fetched = cap3["metrics"]["data/lila/metrics/fetch.json"]["data"]["lila"]
    # Each of the 6 other classes contributes at most 3 picks, `empty` its own cap of 8 (conf
    # caps.empty).
    assert fetched["fetched"] <= 3 * 6 + 8
    report = json.loads((project.path / "data/lila/reports/fetch.json").read_text())
    assert sum(report["selection"]["capped"].values()) > 0
    assert all(n <= 3 for c, n in report["selection"]["picked"].items() if c != "empty")
    # The workspace holds the experiment's results: metrics diff against the baseline.
    diff = json.loads(project.dvc("metrics", "diff", "--json").stdout)
    assert (
        diff["data/lila/metrics/fetch.json"]["lila.fetched"]["new"]
        < diff["data/lila/metrics/fetch.json"]["lila.fetched"]["old"]
    )
    plots = project.dvc("plots", "diff", "--json", "HEAD").stdout
    assert "cls" in plots and "mule deer" in plots  # per-class bars, both revisions
    # Editing params.yaml directly is refused, never silently overwritten.
    bad = project.dvc("exp", "run", "-S", "sources.lila.fetch.cap=2", check=False)
    assert "edited by hand" in bad.stdout + bad.stderr
    assert "-S 'conf/source/lila.yaml:fetch.cap=2'" in bad.stdout + bad.stderr  # the user's key


def test_a_tripped_gate_stops_the_build_after_writing_its_report(project):
    project.dvc("repro")
    plots = project.path / "data/lila/plots"
    assert (plots / "gates.csv").read_text().count("\n") == 1  # the header: no copies here
    assert (plots / "gates.png").read_bytes().startswith(b"\x89PNG")
    per_split = json.loads((plots / "clean_splits.json").read_text())
    assert {r["cls"].split("/")[0] for r in per_split} == {"train", "val", "test"}
    # Unrelated pictures are ~32 bits apart: at 30, the gates see copies everywhere.
    project.set_conf("conf/gates/default.yaml", "max_distance: 4 ", "max_distance: 30 ")
    proc = project.dvc("repro", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    line = next(x for x in out.splitlines() if "quality gates failed" in x)
    assert re.search(r"lila: quality gates failed: \d+ pairs > max_cross_split_duplicates 0", line)
    assert "export-npz@lila" not in ran(proc)
    report = list(csv.DictReader((project.path / "data/lila/failed/plots/gates.csv").open()))
    assert (
        report[0]["kind"].startswith("cross_split") and report[0]["a_split"] != report[0]["b_split"]
    )
    assert all(r["a_item"] and r["b_source_id"] for r in report)
    # DVC ran the stage: it put the last build back and kept this run's files aside.
    assert "data/lila/failed/plots/gates.csv" in line
    metrics = json.loads((project.path / "data/lila/failed/reports/clean.json").read_text())
    assert metrics["gates"]["totals"]["cross_split"] > 0 and metrics["gates"]["tripped"]
    project.set_conf("conf/gates/default.yaml", "max_distance: 30 ", "max_distance: 4 ")
    project.dvc("repro")
    assert (plots / "gates.csv").read_text().count("\n") == 1, "stale report"
    metrics = json.loads((project.path / "data/lila/reports/clean.json").read_text())
    assert metrics["gates"]["tripped"] == []


def test_bad_settings_fail_clearly(project):
    project.set_conf("conf/source/lila.yaml", "  - cougar\n", "  - cougr\n")
    proc = project.dvc("repro", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "unknown class name(s): 'cougr' (close: cougar" in out
    assert "Traceback" not in out
    assert not (project.path / "data/lila/fetch").exists()


def kill_when(project, ready) -> bool:
    """Start `dvc repro`, SIGKILL its process group once ready() holds; return whether it did."""
    proc = subprocess.Popen(
        [str(BIN / "dvc"), "repro"],
        cwd=project.path,
        env=project.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline and not ready():
        time.sleep(0.01)
    hit = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return hit


def objects(cache: Path) -> int:
    """Count verified objects in a download cache."""
    return sum(1 for p in (cache / "objects").rglob("*") if p.is_file())


@pytest.mark.parametrize("point", ["planning", "downloading", "packing"])
def test_sigkill_then_rerun_is_byte_identical(tmp_path, server, point):
    slow = "nacti-unzipped/part[01]/*"
    ref = make_project(tmp_path / "ref", tmp_path / "ref-cache", server.index_url)
    ref.dvc("repro")
    # Slow some images down (429 + Retry-After, then served) so kills land mid-download.
    server.faults.add(slow, [("429", 0.1), "ok"] * 40)
    proj = make_project(tmp_path / "crash", tmp_path / "crash-cache", server.index_url)
    cache, shards = tmp_path / "crash-cache", proj.path / "data/lila/fetch/shards"
    ready = {
        "planning": lambda: objects(cache) >= 1,  # the index is in, metadata may not be
        "downloading": lambda: objects(cache) >= 20,
        "packing": lambda: shards.exists(),
    }[point]
    assert kill_when(proj, ready), f"the run finished before reaching {point}"
    server.faults.clear()
    proj.dvc("repro")
    assert tree_digest(proj.path / "data") == tree_digest(ref.path / "data")
    lock = yaml.safe_load((proj.path / "dvc.lock").read_text())
    assert lock == yaml.safe_load((ref.path / "dvc.lock").read_text())
    assert not list((cache / "tmp").glob("*.part"))
    assert not list((proj.path / "data").rglob("*.part"))


def test_secret_never_reaches_params_lock_logs_or_git(tmp_path, standin_root, monkeypatch):
    import secrets

    from standins.lila import LilaStandin

    sig = secrets.token_hex(16)  # random, so no file in the project can contain it by chance
    secret = f"sv=2034-01-01&sig={sig}"
    with LilaStandin(standin_root, token=secret) as srv:
        proj = make_project(tmp_path / "repo", tmp_path / "cache", srv.index_url)
        proj.set_conf(
            "conf/source/lila.yaml", "sas_token_env: null", "sas_token_env: LILA_SAS_TOKEN"
        )
        proj.set_conf(
            "conf/source/lila.yaml", "- https://lilawildlife.blob.core.windows.net", f"- {srv.url}"
        )
        missing = proj.dvc("repro", check=False)
        assert missing.returncode != 0 and "LILA_SAS_TOKEN, which is not set" in missing.stderr
        env = {**proj.env, "LILA_SAS_TOKEN": secret}
        proc = proj.dvc("repro", "-v", env=env)
        proj.dvc("push", env=env)
        proj.git("add", "-A")
        proj.git("commit", "-qm", "built with a token")
    logs = proc.stdout + proc.stderr
    assert "Running stage 'fetch@lila'" in logs
    fetch = json.loads((proj.path / "data/lila/reports/fetch.json").read_text())
    assert fetch["ok"] == fetch["items"] > 0
    needles = [secret, sig]
    assert not any(n in logs for n in needles)
    for path in [*proj.path.rglob("*"), *(tmp_path / "cache").rglob("*")]:
        if path.is_file() and ".git/" not in str(path):
            blob = path.read_bytes()
            assert not any(n.encode() in blob for n in needles), path
    history = proj.run("git", "log", "-p", "--all").stdout
    assert not any(n in history for n in needles)


def test_queued_experiments_build_two_at_a_time_on_one_download_cache(project):
    import sqlite3

    project.git("add", "-A")
    project.git("commit", "-qm", "baseline", "--allow-empty")
    for cap in (2, 4):
        project.dvc(
            "exp", "run", "--queue", "-n", f"q{cap}", "-S", f"conf/source/lila.yaml:fetch.cap={cap}"
        )
    project.dvc("queue", "start", "-j", "2")
    status = project.wait_for_queue()
    assert status.count("Success") == 2, status
    show = json.loads(project.dvc("exp", "show", "--json").stdout)
    exps = {e["name"]: e["revs"][0]["data"] for rev in show for e in rev.get("experiments") or []}
    for cap in (2, 4):
        data = exps[f"q{cap}"]
        assert data["params"]["params.yaml"]["data"]["sources"]["lila"]["fetch"]["cap"] == cap
        fetched = data["metrics"]["data/lila/metrics/fetch.json"]["data"]["lila"]
        assert fetched["fetched"] > 0 and fetched["failed"] == 0
        assert fetched["fetched"] <= 6 * cap + 8
    # Each experiment's outputs are complete in DVC's cache: check them out and read them.
    project.dvc("exp", "apply", "q4")
    project.dvc("checkout", "-f")
    from stages.core.store import Store

    store = Store(project.path / "data" / "lila" / "fetch")
    for row, data in store.iter_payloads():
        assert hashlib.sha256(data).hexdigest() == row.sha256
    # The shared ledger is intact, one record per URL, and every object left in the shared
    # cache holds the bytes its name says; once both runs are done, nothing stays listed.
    db = sqlite3.connect(project.cache / "ledger-lila.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    urls = [u for (u,) in db.execute("SELECT url FROM results")]
    db.close()
    assert len(urls) == len(set(urls)) and len(urls) > 2
    for path in (project.cache / "objects").rglob("*"):
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
    assert not list((project.cache / "released").iterdir())


def test_a_raised_cap_downloads_only_the_new_items(project, server):
    from stages.core.store import Store

    def packed():
        rows = Store(project.path / "data/lila/fetch").rows()
        return {r.url[len(server.url) :] for r in rows if r.shard}

    project.set_conf("conf/source/lila.yaml", "cap: null", "cap: 2")
    project.dvc("repro", "fetch@lila")
    first, seen = packed(), dict(server.requests)
    # Packed objects left the download cache (where each is named by its sha256 alone); DVC's
    # cache holds the build.
    in_shards = [r for r in Store(project.path / "data/lila/fetch").rows() if r.shard]
    assert in_shards and all(len(r.sha256) == 64 for r in in_shards)
    objects = project.cache / "objects"
    assert [r.item_id for r in in_shards if (objects / r.sha256[:2] / r.sha256).exists()] == []
    project.set_conf("conf/source/lila.yaml", "cap: 2", "cap: 4")
    project.dvc("repro", "fetch@lila")
    second = packed()
    downloaded = {p for p in second if server.requests[p] > seen.get(p, 0)}
    rows = {r.url[len(server.url) :]: r for r in Store(project.path / "data/lila/fetch").rows()}
    assert first < second, [(p, rows.get(p)) for p in first - second][:3]
    assert downloaded == second - first
