"""The Tator source through real DVC: crash safety, exports as outputs, the token's reach."""

from __future__ import annotations

import pytest
import yaml

from standins.tator import TatorStandin, generate
from tests.conftest import make_project
from tests.test_pipeline import kill_when, objects, tree_digest

pytestmark = pytest.mark.slow
TOKEN = "pipeline-token-5ecret"


@pytest.fixture
def tator(monkeypatch):
    monkeypatch.setenv("TATOR_TOKEN", TOKEN)
    with TatorStandin(generate(), token=TOKEN) as srv:
        yield srv


def tator_project(path, cache, srv):
    """A scratch project with the Tator source only (LILA is covered elsewhere)."""
    return make_project(
        path, cache, "http://127.0.0.1:9/unused", tator_url=srv.url, disable=("lila",)
    )


def test_sigkill_mid_fetch_then_rerun_is_byte_identical(tmp_path, tator):
    ref = tator_project(tmp_path / "ref", tmp_path / "ref-cache", tator)
    ref.dvc("repro")
    lock = yaml.safe_load((ref.path / "dvc.lock").read_text())
    stages = lock["stages"]
    for layout in ("voc", "coco"):
        outs = stages[f"export-folders@tator-{layout}"]["outs"]
        assert [o["path"] for o in outs] == [f"data/tator/{layout}"]
    voc = ref.path / "data/tator/voc"
    assert (voc / "ImageSets/Main/default.txt").read_text().split()
    assert (ref.path / "data/tator/coco/annotations/instances_default.json").is_file()
    # The token is in the environment only.
    for rel in ("params.yaml", "dvc.lock", "data/tator/reports/fetch.json"):
        assert TOKEN not in (ref.path / rel).read_text()

    proj = tator_project(tmp_path / "crash", tmp_path / "crash-cache", tator)
    cache = tmp_path / "crash-cache"
    # Slow the frames down (429 + Retry-After, then served) so the kill lands mid-fetch.
    tator.faults.add("rest/GetFrame/*", [("429", 0.2), "ok"] * 20)
    assert kill_when(proj, lambda: objects(cache) >= 2), "fetch finished before the kill"
    tator.faults.clear()
    proj.dvc("repro")
    assert tree_digest(proj.path / "data/tator") == tree_digest(ref.path / "data/tator")
    assert yaml.safe_load((proj.path / "dvc.lock").read_text()) == lock
    assert not list((cache / "tmp").iterdir())
    assert not list((proj.path / "data").rglob("*.part*"))


def test_a_wrong_token_fails_the_run_with_one_message(tmp_path, tator):
    proj = tator_project(tmp_path / "repo", tmp_path / "cache", tator)
    proj.env["TATOR_TOKEN"] = "not-the-token"
    proc = proj.dvc("repro", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "refused the token in $TATOR_TOKEN" in out and "not-the-token" not in out
    assert "Traceback" not in out
    assert not (proj.path / "data/tator/fetch").exists()
