"""Item-level diff between dataset versions: the comparison, and real DVC revisions,
experiments and a clone that pulled only one version."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys

import pytest
from PIL import Image, ImageDraw

from stages.core.gallery import THUMB, default_caption, layout
from stages.core.gallery import draw as gallery
from stages.core.gallery import font as gallery_font
from stages.core.itemdiff import compare, params_diff
from stages.core.store import Row, Store
from stages.pipeline.revisions import Revision, payload
from tests.conftest import git


def row(item, labels=("deer",), sha="s", status="ok", boxes=()):
    """Return a manifest row."""
    return Row(item, "lila", f"src-{item}", sha256=sha, labels=list(labels), status=status,
               boxes=[dict(b) for b in boxes])  # fmt: skip


BOX = {"label": "deer", "x": 1.0, "y": 2.0, "w": 3.0, "h": 4.0}


def test_each_kind_of_change_is_found_once_per_item_and_class():
    old = [row("same"), row("gone", ["cougar"]), row("relabel"), row("box", boxes=[BOX]),
           row("bytes"), row("status"), row("two", ["cougar"])]  # fmt: skip
    new = [row("same"), row("new", ["cougar"]), row("relabel", ["cougar"]),
           row("box", boxes=[{**BOX, "x": 1.5}]), row("bytes", sha="t"),
           row("status", status="missing"), row("two", ["deer"], sha="u")]  # fmt: skip
    d = compare(old, new)
    assert {c.item_id: c.kinds for c in d.items} == {
        "gone": ["removed"], "new": ["added"], "relabel": ["relabelled"], "box": ["boxes"],
        "bytes": ["content"], "status": ["status"], "two": ["relabelled", "content"],
    }  # fmt: skip
    assert d.unchanged == 1
    assert d.totals() == {"added": 1, "removed": 1, "relabelled": 2, "boxes": 1,
                          "content": 2, "split": 0, "status": 1}  # fmt: skip
    assert d.per_class()["cougar"]["removed"] == 1 and d.per_class()["cougar"]["relabelled"] == 1
    two = next(c for c in d.items if c.item_id == "two")
    assert two.fields() == {
        "labels": {"a": ["cougar"], "b": ["deer"]},
        "sha256": {"a": "s", "b": "u"},
        "bytes": {"a": None, "b": None},
        "width": {"a": None, "b": None},
        "height": {"a": None, "b": None},
    }
    assert compare(new, new).items == []


def test_boxes_compare_to_a_thousandth_and_in_any_order():
    a = [row("x", boxes=[BOX, {**BOX, "label": "cougar"}])]
    b = [row("x", boxes=[{**BOX, "label": "cougar"}, {**BOX, "x": 1.0004}])]
    assert compare(a, b).items == []


def test_splits_moves_frames_without_digests_and_odd_boxes_are_compared():
    moved = dataclasses.replace(row("x"), split="test")
    assert compare([dataclasses.replace(row("x"), split="train")], [moved]).items[0].kinds == [
        "split"
    ]
    # Decoded frames carry no sha256: their size in bytes and pixels stands in.
    a, b = row("f", sha=None), row("f", sha=None)
    a.bytes, b.bytes = 100, 120
    assert compare([a], [b]).items[0].kinds == ["content"]
    nan = {**BOX, "x": float("nan")}
    assert compare([row("n", boxes=[nan])], [row("n", boxes=[nan])]).items == []


def test_params_diff_lists_changed_added_and_removed_keys():
    got = params_diff({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": 1, "c": 3}, "e": True})
    assert got == [{"key": "a.c", "a": 2, "b": 3}, {"key": "d", "a": [1], "b": None},
                   {"key": "e", "a": None, "b": True}]  # fmt: skip
    assert params_diff({}, {"f": {}}) == [{"key": "f", "a": None, "b": {}}]


def test_gallery_tiles_survive_bad_boxes_and_missing_payloads(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (90, 120, 30)).save(buf, format="PNG")
    odd = row("o", boxes=[{**BOX, "w": -3.0}, {**BOX, "y": float("inf")}])
    gone = row("g")
    png = gallery([("deer", [odd, gone])], lambda r: buf.getvalue() if r is odd else None)
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
    png2 = gallery([("deer", [odd, gone])], lambda r: 1 / 0)  # a reader that fails
    assert png2.startswith(b"\x89PNG")


def test_gallery_captions_fit_their_cells_and_keep_the_id_end():
    long_id = "camera_trap_site_042_deployment_2023-06-01_media_7731_000042"
    labels = ["odocoileus hemionus hemionus", "california quail", "a_label_with_no_spaces_at_all"]
    many = row(long_id, labels)
    sections = [("deer", [many, *(row(f"i{k}") for k in range(6))]), ("cougar", [row("c")])]
    font = gallery_font()
    bands = layout(sections, default_caption, font)
    pen = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    for band, after in zip(bands, bands[1:], strict=False):
        assert band.top + band.height <= after.top  # bands never overlap
    for band in bands:
        for cell in band.cells:
            for x, y, text in cell.lines:
                left, top, right, bottom = pen.textbbox((x, y), text, font=font)
                assert cell.x <= left and right <= cell.x + THUMB, text
                assert cell.y + THUMB <= top and bottom <= cell.y + THUMB + band.caption, text
                assert bottom <= band.top + band.height
    first = bands[0].cells[0]
    lines = [t for _, _, t in first.lines]
    assert lines[0].startswith("camera_") and lines[0].endswith("_000042") and "…" in lines[0]
    assert len(lines) > 3 and "".join(lines[1:]).replace(" ", "") == ",".join(labels).replace(
        " ", ""
    )  # every label written, none cut
    assert bands[0].caption > bands[1].caption  # each band as tall as its own captions
    png = gallery(sections, lambda r: None)
    assert png == gallery(sections, lambda r: None)


def test_a_workspace_manifest_never_reads_outside_the_project(tmp_path):
    (tmp_path / "repo/data/s/clean").mkdir(parents=True)
    (tmp_path / "secret").write_bytes(b"not yours")
    r = row("x")
    r.shard, r.offset, r.bytes = "../../../../secret", 0, 9
    assert payload(tmp_path / "repo", Revision("workspace", None), "data/s/clean", r) is None
    r.shard = "/dev/zero"
    assert payload(tmp_path / "repo", Revision("workspace", None), "data/s/clean", r) is None


def diff(project, *args, check=True):
    """Run stages.diff in a project; return the completed process."""
    return project.run(sys.executable, "-m", "stages.diff", *args, check=check)


def ids(project, rel="data/lila/clean") -> set[str]:
    """Return the item ids of a workspace manifest."""
    return {r.item_id for r in Store(project.path / rel).rows()}


@pytest.mark.slow
def test_diff_between_revisions_experiments_and_a_clone_that_pulled_one(project, tmp_path):
    project.dvc("repro")
    project.dvc("push")
    project.git("add", "-A")
    project.git("commit", "-qm", "v1")
    project.git("tag", "v1")
    v1 = ids(project)
    assert json.loads(diff(project, "--format", "json").stdout)["sources"]["lila"]["changed"] == []

    project.set_conf("conf/source/lila.yaml", "cap: null", "cap: 4")
    project.dvc("repro")
    v2 = ids(project)
    assert v2 < v1
    doc = json.loads(diff(project, "v1", "--format", "json").stdout)  # v1 -> the workspace
    lila = doc["sources"]["lila"]
    assert {c["item_id"] for c in lila["changed"]} == v1 - v2
    assert {k for c in lila["changed"] for k in c["changes"]} == {"removed"}
    assert lila["totals"]["removed"] == len(v1 - v2) and lila["unchanged"] == len(v2)
    assert {"key": "sources.lila.fetch.cap", "a": None, "b": 4} in doc["params"]
    text = diff(project, "v1").stdout
    assert "source lila:" in text and "sources.lila.fetch.cap: null -> 4" in text
    # The removed items drawn from v1's shards, the same bytes every time.
    pics = [tmp_path / f"diff{k}.png" for k in range(2)]
    for pic in pics:
        diff(project, "v1", "--gallery", str(pic))
    assert pics[0].read_bytes() == pics[1].read_bytes()
    with Image.open(pics[0]) as im:
        assert im.format == "PNG" and im.height > 128  # a band of removed items
    # The clean stage's per-class gallery is a DVC plot image.
    shown = json.loads(project.dvc("plots", "show", "--json").stdout)["data"]
    assert shown["data/lila/plots/gallery.png"][0]["type"] == "image"
    rows = list(csv.DictReader(io.StringIO(diff(project, "v1", "--format", "csv").stdout)))
    assert {r["item_id"] for r in rows} == v1 - v2 and all(r["source_id"] for r in rows)

    project.dvc("push")
    project.git("add", "-A")
    project.git("commit", "-qm", "v2")
    same = json.loads(diff(project, "HEAD", "HEAD", "--format", "json").stdout)
    assert same["sources"]["lila"]["changed"] == [] and same["params"] == []

    # An experiment by name, against its baseline.
    project.dvc("exp", "run", "-n", "cap2", "-S", "conf/source/lila.yaml:fetch.cap=2")
    project.git("checkout", "-q", "--", ".")  # the workspace holds cap2's results: drop them
    project.dvc("checkout", "-q")
    exp = json.loads(diff(project, "HEAD", "cap2", "--format", "json").stdout)
    removed = {c["item_id"] for c in exp["sources"]["lila"]["changed"]}
    assert removed and removed <= v2 and exp["b"]["rev"] == "cap2"

    # A clone that pulled only v2 still diffs against v1: one manifest comes from the remote.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project.path), str(clone))
    other = type(project)(clone, tmp_path / "other-cache")
    other.dvc("pull")
    got = json.loads(diff(other, "v1", "HEAD", "--format", "json").stdout)
    assert {c["item_id"] for c in got["sources"]["lila"]["changed"]} == v1 - v2

    # DVC's own bookkeeping refs under refs/exps are not experiments.
    head = other.git("rev-parse", "HEAD").strip()
    other.git("update-ref", "refs/exps/celery/stash", head)
    proc = diff(other, "stash", check=False)
    assert proc.returncode == 2 and "experiments: none" in proc.stderr
    # Bad input: one clear message each.
    for args, message in (
        (("nope",), "unknown revision or experiment 'nope'"),
        (("v1", "--source", "kinetics"), "source 'kinetics' has no clean output at v1"),
        (("--stage", "frames", "--source", "lila"), "source 'lila' has no frames output"),
    ):
        proc = diff(other, *args, check=False)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    # A manifest in no cache: a fresh clone whose remote is empty.
    empty = tmp_path / "empty"
    git(tmp_path, "clone", "-q", str(project.path), str(empty))
    bare = type(project)(empty, tmp_path / "empty-cache")
    bare.dvc("remote", "modify", "local", "url", str(tmp_path / "no-remote"))
    proc = diff(bare, "v1", "HEAD", check=False)
    assert proc.returncode == 2 and "neither the local DVC cache nor the remote" in proc.stderr


@pytest.mark.slow
def test_diff_sees_a_class_added_an_image_replaced_and_one_removed_upstream(
    tmp_path, standin_root, cache_dir
):
    import shutil

    from standins.lila import LilaStandin
    from tests.conftest import make_project

    root = tmp_path / "standin"
    shutil.copytree(standin_root, root)  # a stand-in of this test's own, to change upstream
    with LilaStandin(root) as srv:
        project = make_project(tmp_path / "repo", cache_dir, srv.index_url)
        project.dvc("repro")
        project.git("add", "-A")
        project.git("commit", "-qm", "v1")
        before = {r.item_id: r for r in Store(project.path / "data/lila/fetch").rows()}
        ok = sorted(i for i, r in before.items() if r.status == "ok")
        replaced, removed = before[ok[0]], before[ok[1]]

        def upstream(row):  # where the stand-in keeps an image (under any cloud's prefix)
            return root / "nacti-unzipped" / row.meta["file_name"]

        with Image.open(upstream(replaced)) as im:  # new pixels, same name and size
            im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(upstream(replaced), quality=90)
        upstream(removed).unlink()
        project.set_conf("conf/source/lila.yaml", "  - empty\n", "  - empty\n  - domestic cow\n")
        # Items the last build holds are reused unless upstream is to be read afresh.
        project.set_conf("conf/fetch/default.yaml", "refresh: false", "refresh: true")
        project.dvc("repro")
    after = {r.item_id: r for r in Store(project.path / "data/lila/fetch").rows()}
    assert after[removed.item_id].status == "missing"
    doc = json.loads(diff(project, "--stage", "fetch", "--format", "json").stdout)
    kinds: dict[str, set] = {}
    for change in doc["sources"]["lila"]["changed"]:
        for kind in change["changes"]:
            kinds.setdefault(kind, set()).add(change["item_id"])
    cows = {i for i, r in after.items() if "domestic cow" in r.labels}
    assert cows and kinds.get("added", set()) == cows - set(before)
    assert kinds.get("relabelled", set()) == cows & set(before)
    assert kinds["content"] == {replaced.item_id}
    assert kinds["status"] == {removed.item_id}
    assert "removed" not in kinds
