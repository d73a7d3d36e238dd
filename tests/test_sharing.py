"""Everyday use after a build: a teammate's pull, the README's experiments, failed runs."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.test_pipeline import ran, tree_digest

pytestmark = pytest.mark.slow
UP_TO_DATE = "Data and pipelines are up to date."


def test_a_teammates_clone_pulls_a_clean_workspace_for_every_stage(built, tmp_path):
    clone = built.clone(tmp_path / "teammate")
    for name in ("videodir", "figure8"):  # the local-input sources' folders came with the pull
        assert (clone.path / "data" / name / "input.dvc").is_file()
        assert tree_digest(clone.path / "data" / name / "input") == tree_digest(
            built.path / "data" / name / "input"
        )
    assert tree_digest(clone.path / "data") == tree_digest(built.path / "data")
    assert clone.dvc("status").stdout.strip() == UP_TO_DATE
    dry = clone.dvc("repro", "--dry")
    assert ran(dry) == [], dry.stdout
    stages = yaml.safe_load((clone.path / "dvc.lock").read_text())["stages"]
    assert {s.split("@")[1] for s in stages if "@" in s} == {
        "lila",
        "kinetics",
        "videodir",
        "tator",
        "figure8",
        "tator-coco",
        "tator-voc",
    }


def readme_block(heading: str) -> list[str]:
    """Return the commands of the first ```sh block after a README heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(f"\n{heading}\n") :]
    block = section[section.index("```sh\n") + 6 :]
    return [line for line in block[: block.index("```")].splitlines() if line.strip()]


def widths(text: str) -> list[int]:
    """Return the length of each line of a table."""
    return [len(line) for line in text.splitlines()]


def test_the_readme_experiments_run_as_written_and_compare_readably(built, tmp_path):
    proj = built.clone(tmp_path / "exp")
    env = {**proj.env, "COLUMNS": "200"}
    commands = readme_block("## Experiments")
    assert commands[0].startswith("make serve") and commands[1].startswith("export TATOR_TOKEN")
    # The stand-ins serve where this project's conf points; the secrets are the ones they take.
    shown = None
    for line in commands[2:]:
        cmd = line.split("  #")[0].strip()
        proc = proj.run("bash", "-c", cmd, env=env, timeout=900)
        if cmd.startswith("dvc exp show"):
            shown = proc.stdout
        if cmd.startswith("dvc metrics diff"):
            assert max(widths(proc.stdout)) <= 200 and "…" not in proc.stdout
            assert "lila.fetched" in proc.stdout
        if "dvc queue start" in cmd:
            status = proj.wait_for_queue(600)
            assert status.count("Success") == 2, status
    # After the two `-S` runs: every changed column fits a 200-column terminal, none cut.
    assert shown is not None
    assert max(widths(shown)) <= 200 and "…" not in shown, shown
    header = next(line for line in shown.splitlines() if "Experiment" in line)
    for column in ("lila.fetched", "lila.cougar", "export.height", "sources.lila.fetch.cap"):
        assert column in header, header
    assert not re.search(r"\b[0-9a-f]{32}\.dir\b", shown)  # no dependency hash columns
    rows = {m.group(1): line for line in shown.splitlines() if (m := re.search(r"\[(\w+)\]", line))}
    assert set(rows) == {"cap20", "px96"}
    # The two named runs and the two queued ones, each with its own cap and a complete fetch.
    table = json.loads(proj.dvc("exp", "show", "--json").stdout)
    exps = {e["name"]: e["revs"][0]["data"] for rev in table for e in rev.get("experiments") or []}
    caps = {}
    for name, data in exps.items():
        caps[name] = data["params"]["params.yaml"]["data"]["sources"]["lila"]["fetch"]["cap"]
        headline = data["metrics"]["data/lila/metrics/fetch.json"]["data"]["lila"]
        assert headline["fetched"] > 0 and headline["failed"] == 0
    assert sorted(caps.values()) == [10, 20, 20, 30] and caps["cap20"] == 20


def clone_status(proj) -> set[str]:
    """Return the paths `git status --porcelain` lists."""
    out = proj.run("git", "status", "--porcelain", "--untracked-files=all").stdout
    return {line[3:] for line in out.splitlines()}


@pytest.mark.parametrize(
    ("stage", "conf", "old", "new", "says"),
    [
        ("fetch@lila", "conf/source/lila.yaml", "  - cougar\n", "  - cougr\n", "unknown class"),
        (  # the gates are every source's: `dvc repro <stage>` makes lila's clean the one to fail
            "clean-annotations@lila",
            "conf/gates/default.yaml",
            "max_distance: 4 ",
            "max_distance: 30 ",
            "quality gates failed",
        ),
        (
            "export-npz@figure8",
            "conf/source/figure8.yaml",
            "samples_to_drop: []",
            "samples_to_drop: [x_09_y_09]",
            "name no movie or position",
        ),
    ],
)
def test_a_failed_stage_leaves_every_output_as_the_last_build(
    built, tmp_path, stage, conf, old, new, says
):
    proj = built.clone(tmp_path / "fail")
    before = tree_digest(proj.path / "data")
    proj.set_conf(conf, old, new)
    target = [stage] if stage.startswith("clean") else []
    proc = proj.dvc("repro", *target, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and says in out and "Traceback" not in out, out
    assert f"failed to reproduce '{stage}'" in out
    assert set(ran(proc)) == {"compose", stage}, out
    source = stage.split("@")[1]
    assert f"{stage} failed: its outputs are back as dvc.lock records them" in out
    # Every output is there, as the last build: only the user's edit, the composed params and
    # the compose stage's lock entry differ.
    assert clone_status(proj) == {conf, "params.yaml", "dvc.lock"}
    after = tree_digest(proj.path / "data")
    failed = {k: v for k, v in after.items() if "/failed/" in k}
    assert {k: v for k, v in after.items() if k not in failed} == before
    status = proj.dvc("status").stdout
    assert "deleted" not in status and "changed outs" not in status, status
    if stage.startswith("clean-annotations"):  # the tripped run's report is kept to read
        assert f"data/{source}/failed/plots/gates.csv" in out
        report = (proj.path / f"data/{source}/failed/plots/gates.csv").read_text()
        assert report.count("\n") > 1
        assert report.splitlines()[1].startswith(("cross_split", "label_conflict"))
        tripped = json.loads((proj.path / f"data/{source}/failed/metrics/clean.json").read_text())
        assert sum(tripped[source][k] for k in ("dupes", "conflicts", "leaks")) > 0
    # Undoing the edit makes the project what it was: nothing to build.
    proj.set_conf(conf, new, old)
    again = proj.dvc("repro")
    assert ran(again) == ["compose"], again.stdout
    assert proj.dvc("status").stdout.strip() == UP_TO_DATE


def test_make_serve_serves_every_standin_on_the_conf_ports_until_interrupted(tmp_path):
    import socket
    import urllib.error
    import urllib.request

    from tests.conftest import tracked_files

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    # A copy of the project whose confs name free ports (a developer's demo may hold 8765...).
    for rel in tracked_files():
        if rel.startswith(("stages/", "standins/", "conf/")):
            dest = tmp_path / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes((ROOT / rel).read_bytes())
    ports = {}
    for name, old in (
        ("lila", "127.0.0.1:8765"),
        ("kinetics", "127.0.0.1:8766"),
        ("tator", "127.0.0.1:8767"),
        ("figure8", "127.0.0.1:8768"),
        ("videodir", "127.0.0.1:8769"),
    ):
        path = tmp_path / "conf" / "source" / f"{name}.yaml"
        ports[name] = free_port()
        path.write_text(path.read_text().replace(old, f"127.0.0.1:{ports[name]}"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.demo", "serve"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        while not any(line.startswith("  export ") for line in lines):
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        exports = dict(pair.split("=", 1) for pair in shlex.split(lines[-1].split("export", 1)[1]))
        assert exports == {"TATOR_TOKEN": "demo-token", "FIGURE_EIGHT_KEY": "demo-key"}
        answers = {}
        for name, port in ports.items():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
                    answers[name] = resp.status
            except urllib.error.HTTPError as exc:  # an answer all the same
                answers[name] = exc.code
    except Exception:
        proc.kill()
        raise
    finally:
        proc.send_signal(2)  # Ctrl-C
        rest = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0 and "stand-ins stopped" in rest
    assert set(answers) == set(ports)
    for port in ports.values():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"
    assert (tmp_path / ".demo" / "standin" / "videodir").is_dir()  # its state is kept there


def test_readme_names_the_local_input_folders_dvc_tracks():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("videodir", "figure8"):
        assert (ROOT / "data" / name / "input.dvc").is_file()
        assert f"dvc add data/{name}/input" in text.replace("\n", " ")
    assert Path(ROOT / ".gitignore").read_text().count("/data/*/failed/") == 1
