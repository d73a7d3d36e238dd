"""The video sources through real DVC: crash safety, and which settings re-run which stage."""

from __future__ import annotations

import shutil

import pytest
import yaml

from standins.kinetics import KineticsStandin, generate
from tests.conftest import make_project
from tests.test_pipeline import kill_when, objects, tree_digest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kinetics_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinetics")
    generate(root)
    return root


@pytest.fixture
def kin(kinetics_root):
    with KineticsStandin(kinetics_root) as srv:
        yield srv


def video_project(path, cache, kin):
    """A scratch project with the two video sources only (LILA is covered elsewhere)."""
    return make_project(
        path, cache, "http://127.0.0.1:9/unused", kinetics_url=kin.url, disable=("lila",)
    )


def ran(out: str) -> set[str]:
    """Return the stages a `dvc repro` output says it ran."""
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


@pytest.mark.parametrize("point", ["fetch", "extract-frames"])
def test_sigkill_then_rerun_is_byte_identical(tmp_path, kin, point):
    ref = video_project(tmp_path / "ref", tmp_path / "ref-cache", kin)
    ref.dvc("repro")
    proj = video_project(tmp_path / "crash", tmp_path / "crash-cache", kin)
    cache = tmp_path / "crash-cache"
    if point == "fetch":
        # Slow the clips down (429 + Retry-After, then served) so the kill lands mid-fetch.
        kin.faults.add("youtube/*.mp4", [("429", 0.3), "ok"] * 20)
        ready = lambda: objects(cache) >= 3  # noqa: E731 - the CSV and a clip or two
    else:
        frames = proj.path / "data/kinetics/frames"
        ready = frames.exists
    assert kill_when(proj, ready), f"the run finished before reaching {point}"
    kin.faults.clear()
    proj.dvc("repro")
    assert tree_digest(proj.path / "data/kinetics") == tree_digest(ref.path / "data/kinetics")
    lock = yaml.safe_load((proj.path / "dvc.lock").read_text())
    assert lock == yaml.safe_load((ref.path / "dvc.lock").read_text())
    assert not list((cache / "tmp").iterdir())
    assert not list((proj.path / "data").rglob("*.part"))


def test_frame_settings_rerun_frames_only_and_a_changed_folder_refetches(tmp_path, kin):
    proj = video_project(tmp_path / "repo", tmp_path / "cache", kin)
    proj.dvc("repro")
    proj.set_conf("conf/source/kinetics.yaml", "short_side: 256", "short_side: 128")
    out = proj.dvc("repro").stdout
    assert ran(out) == {
        "compose",
        "extract-frames@kinetics",
        "clean-annotations@kinetics",
        "export-npz@kinetics",
    }
    metrics = yaml.safe_load((proj.path / "data/kinetics/metrics/frames.json").read_text())
    assert metrics["kinetics"]["clips"] == 8
    # A new video in the input folder re-runs the folder's fetch, and nothing of Kinetics.
    src = proj.path / "data/videodir/input/lobby/person/20240501_120000.mp4"
    shutil.copy(src, src.with_name("20240601_120000.mp4"))
    out = proj.dvc("repro").stdout
    assert "fetch@videodir" in ran(out) and not any("kinetics" in s for s in ran(out))


def import_project(path, cache, into):
    """A scratch project with the video folder only, imported into a Tator stand-in."""
    proj = make_project(
        path,
        cache,
        "http://127.0.0.1:9/unused",
        kinetics_url="http://127.0.0.1:9",
        import_url=into.url,
        disable=("lila", "kinetics"),
    )
    proj.env["TATOR_TOKEN"] = "import-token"
    return proj


def test_a_killed_import_resumes_without_duplicates_and_ends_as_an_uninterrupted_one(tmp_path):
    from standins.tator import TatorStandin, empty

    with (
        TatorStandin(empty(), token="import-token") as ref_into,
        TatorStandin(empty(), token="import-token") as into,
    ):
        for srv in (ref_into, into):  # ids from content: two servers give the same ids
            srv.stable_ids = srv.annotate = True
        ref = import_project(tmp_path / "ref", tmp_path / "ref-cache", ref_into)
        ref.dvc("repro")
        proj = import_project(tmp_path / "crash", tmp_path / "crash-cache", into)
        # Media creations after the second wait; the run is killed while they do, and they
        # then complete on the server with nobody to hear the answer.
        into.hold_after = 2
        assert kill_when(proj, lambda: into.transcodes >= 3), "the import ended first"
        into.release.set()
        assert not (proj.path / "data/videodir/import").exists()
        proj.dvc("repro")
    assert len(into.data.media) == len(ref_into.data.media) == 6  # no duplicates
    for name in ("import", "labels"):
        assert tree_digest(proj.path / f"data/videodir/{name}") == tree_digest(
            ref.path / f"data/videodir/{name}"
        )
    labels = (proj.path / "data/videodir/labels/labels.csv").read_text().splitlines()
    assert len(labels) == 1 + 12  # a box and an event per media, as the annotators left them
