"""The Figure Eight source through real DVC: all five stages, crash safety, the key's reach."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from standins.figure8 import Figure8Standin
from tests.conftest import make_project
from tests.test_pipeline import kill_when, objects, tree_digest

pytestmark = pytest.mark.slow
KEY = "pipeline-key-5ecret"


@pytest.fixture
def figure8(monkeypatch):
    monkeypatch.setenv("FIGURE_EIGHT_KEY", KEY)
    with Figure8Standin(key=KEY) as srv:
        yield srv


def figure8_project(path, cache, srv):
    """A scratch project with the Figure Eight source only."""
    return make_project(
        path, cache, "http://127.0.0.1:9/unused", figure8_url=srv.url, disable=("lila",)
    )


def test_sigkill_mid_fetch_then_rerun_is_byte_identical(tmp_path, figure8):
    ref = figure8_project(tmp_path / "ref", tmp_path / "ref-cache", figure8)
    ref.dvc("repro")
    lock = yaml.safe_load((ref.path / "dvc.lock").read_text())
    assert {"fetch@figure8", "extract-frames@figure8", "plots@figure8"} <= set(lock["stages"])
    data = ref.path / "data/figure8"
    parts = sorted((data / "npz").glob("*/3D_example_part_*.npz"))
    with np.load(parts[0], allow_pickle=False) as npz:
        assert npz["X"].shape[1:] == (4, 56, 76, 1) and npz["y"].dtype == np.int32
    metrics = json.loads((data / "reports/fetch.json").read_text())
    assert metrics["selection"]["broken_links"] == 1 and metrics["missing"] == 1
    assert (data / "fetch/job_1363594_reupload.csv").read_text().count("\n") == 2
    assert (data / "plots/sheet.png").read_bytes().startswith(b"\x89PNG")
    series = json.loads((data / "plots/series.json").read_text())
    assert sum(r["frames"] for r in series) == 28
    # The key is in the environment only.
    for rel in ("params.yaml", "dvc.lock", "data/figure8/reports/fetch.json"):
        assert KEY not in (ref.path / rel).read_text()

    proj = figure8_project(tmp_path / "crash", tmp_path / "crash-cache", figure8)
    cache = tmp_path / "crash-cache"
    # Slow the annotations down (429 + Retry-After, then served) so the kill lands mid-fetch:
    # the report and the 8 raw frames are in the cache first.
    figure8.faults.add("annotations/*", [("429", 0.3), "ok"] * 8)
    assert kill_when(proj, lambda: objects(cache) >= 11), "fetch finished before the kill"
    figure8.faults.clear()
    proj.dvc("repro")
    assert tree_digest(proj.path / "data/figure8") == tree_digest(data)
    assert yaml.safe_load((proj.path / "dvc.lock").read_text()) == lock
    assert not list((cache / "tmp").iterdir())


def test_a_wrong_key_fails_the_run_with_one_message(tmp_path, figure8):
    proj = figure8_project(tmp_path / "repo", tmp_path / "cache", figure8)
    proj.env["FIGURE_EIGHT_KEY"] = "not-the-key"
    proc = proj.dvc("repro", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "answered http 401 to the credential from FIGURE_EIGHT_KEY" in out
    assert "not-the-key" not in out and "Traceback" not in out
    assert not (proj.path / "data/figure8/fetch").exists()
