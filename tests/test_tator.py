"""fetch@tator with the real `tator` client against the stand-in, then clean, VOC and COCO."""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from lxml import etree

from stages.core.errors import ConfigError, MetadataError
from stages.core.executor import LocalExecutor
from stages.core.store import Store, rebase, write_manifest
from stages.export_folders import export_folders
from stages.fetch import fetch
from stages.pipeline.compose import group_defaults, source_defaults
from stages.sources import load
from stages.sources.tator.api import (
    DeadlineExceeded,
    ResponseTooLarge,
    TokenRejected,
    session_for,
)
from standins.tator import BOX_TYPE, CLASSES, TatorStandin, generate
from tests.families import clean

TOKEN = "test-token-5ecret"
SOURCE = load("tator")
ROOT = Path(__file__).resolve().parent.parent
DATUMARO = ROOT / ".venv-datumaro" / "bin" / "python"  # made by `make test`


@pytest.fixture(scope="module")
def data():
    return generate()


@pytest.fixture
def tator(data, monkeypatch):
    """The stand-in, and TATOR_TOKEN set to its token."""
    monkeypatch.setenv("TATOR_TOKEN", TOKEN)
    with TatorStandin(data, token=TOKEN) as srv:
        yield srv


def fast_fetch(**changes):
    """The shared downloader settings, with short retries for tests."""
    return group_defaults("fetch", **{"backoff": 0.05, "backoff_max": 0.2, **changes})


def run(url: str, tmp: Path, name: str = "fetch", fetch_cfg=None, classes=None, **fetch_changes):
    """Run fetch@tator with conf/source/tator.yaml changed; return (store, metrics)."""
    cfg = source_defaults(
        "tator",
        fetch={"host": url, **fetch_changes},
        **({} if classes is None else {"classes": classes}),
    )
    _, metrics = fetch(
        SOURCE,
        cfg,
        fetch_cfg or fast_fetch(),
        group_defaults("store"),
        tmp / name,
        tmp / "cache",
        executor=LocalExecutor(2),
    )
    return Store(tmp / name), metrics


def media(**changes) -> dict:
    """The media selection of conf/source/tator.yaml with some filters set."""
    return {"names": [], "section": None, "attributes": [], "if_missing": "error", **changes}


def expected_frames(data, versions=None) -> dict[tuple[int, int], list[dict]]:
    """Return the box localizations per (media, frame), straight from the stand-in's rows."""
    out: dict[tuple[int, int], list[dict]] = {}
    for loc in data.localizations:
        if loc["type"] == BOX_TYPE and (versions is None or loc["version"] in versions):
            out.setdefault((loc["media"], loc["frame"]), []).append(loc)
    return out


def class_of(data, loc) -> str:
    """Return a box's class by the rule: its own, else its track's, else Unknown."""
    own = loc["attributes"].get("ScientificName")
    if own:
        return own
    for state in data.states:
        if loc["id"] in state["localizations"] and state["attributes"].get("ScientificName"):
            return state["attributes"]["ScientificName"]
    return "Unknown"


def test_one_row_per_annotated_frame_with_tracks_resolved(tator, data, tmp_path):
    store, m = run(tator.url, tmp_path)
    want = expected_frames(data)
    rows = store.rows()
    assert {(r.meta["media"], r.meta["frame"]) for r in rows} == set(want)
    assert all(r.status == "ok" for r in rows)
    for row in rows:
        locs = want[row.meta["media"], row.meta["frame"]]
        assert row.meta["localizations"] == [loc["id"] for loc in locs]
        assert [b["label"] for b in row.boxes] == [class_of(data, loc) for loc in locs]
        assert [(b["x"], b["y"], b["w"], b["h"]) for b in row.boxes] == [
            (loc["x"], loc["y"], loc["width"], loc["height"]) for loc in locs
        ]
    # The track's boxes carry no class: they take the state's; a box's own class wins.
    track, own, across, _ = data.states
    by_loc = {
        lid: b["label"]
        for r in rows
        for lid, b in zip(r.meta["localizations"], r.boxes, strict=True)
    }
    assert {by_loc[lid] for lid in track["localizations"]} == {
        track["attributes"]["ScientificName"]
    }
    assert by_loc[own["localizations"][0]] != own["attributes"]["ScientificName"]
    assert len(across["media"]) == 2  # a track over two media resolves in both
    assert {by_loc[lid] for lid in across["localizations"]} == {
        across["attributes"]["ScientificName"]
    }
    assert m["selection"]["boxes_class_from_track"] == 5
    # Only frames with a box are requested, one each, as JPEG, with the token.
    frames = [s for s in tator.seen if s.path.startswith("/rest/GetFrame/")]
    assert sorted(
        (int(s.path.rsplit("/", 1)[1]), int(s.query.split("frames=")[1].split("&")[0]))
        for s in frames
    ) == sorted(want)
    assert all(
        "format=jpg" in s.query and s.headers["Authorization"] == f"Token {TOKEN}" for s in frames
    )
    # The schema is read without the token.
    assert all("Authorization" not in s.headers for s in tator.seen if s.path == "/schema/")
    assert any(s.path == "/schema/" for s in tator.seen)
    sel = m["selection"]
    assert sel["media_without_boxes"] == 1 and sel["non_box_localizations"] == {
        "dot": 2,
        "line": 1,
        "poly": 1,
    }
    assert sel["boxes_unknown_class"] == sel["boxes_without_class"] == 1


def test_classes_are_discovered_sorted_and_recorded(tator, data, tmp_path):
    store, m = run(tator.url, tmp_path)
    names = sorted({class_of(data, loc) for locs in expected_frames(data).values() for loc in locs})
    assert store.classes == names == m["selection"]["classes_discovered"]
    assert list(m["classes"]) == names
    # Listed classes fix the ids and select: frames with none of them are not fetched.
    store, m = run(tator.url, tmp_path, "listed", classes=[CLASSES[3], CLASSES[0]])
    assert store.classes == [CLASSES[3], CLASSES[0]]
    assert all({CLASSES[3], CLASSES[0]} & set(r.labels) for r in store.rows())
    assert m["selection"]["frames_other_classes_only"] > 0
    with pytest.raises(ConfigError, match="did you mean 'Sebastes miniatus'"):
        run(tator.url, tmp_path, "typo", classes=["Sebastes miniatu"])


def test_media_names_are_made_safe(tator, data, tmp_path):
    store, _ = run(tator.url, tmp_path)
    names = {m["id"]: m["name"] for m in data.media}
    assert any(":" in n for n in names.values())
    for row in store.rows():
        assert row.meta["media_name"] == names[row.meta["media"]]
        assert ":" not in row.item_id and "/" not in row.item_id and " " not in row.item_id


def test_a_box_without_class_is_unknown_or_dropped(tator, tmp_path):
    store, _ = run(tator.url, tmp_path)
    assert sum(b["label"] == "Unknown" for r in store.rows() for b in r.boxes) == 1
    store, m = run(tator.url, tmp_path, "drop", unknown_class=None)
    assert not any(b["label"] == "Unknown" for r in store.rows() for b in r.boxes)
    assert m["selection"]["boxes_dropped_without_class"] == 1 and "Unknown" not in store.classes


def test_types_and_versions_select_localizations(tator, data, tmp_path):
    store, m = run(tator.url, tmp_path, "v1", versions=[1])
    want = expected_frames(data, versions={1})
    assert {(r.meta["media"], r.meta["frame"]) for r in store.rows()} == set(want)
    assert len(want) < len(expected_frames(data))  # a frame holds only a version-2 box
    assert all("version=1" in s.query for s in tator.seen if s.path == "/rest/Localizations/1")
    tator.seen.clear()
    store, m = run(tator.url, tmp_path, "boxes", localization_types=["Boxes"])
    assert m["selection"]["non_box_localizations"] == {}
    assert all("type=7" in s.query for s in tator.seen if s.path == "/rest/Localizations/1")
    assert len(store.rows()) == len(expected_frames(data))
    with pytest.raises(ConfigError, match="did you mean 'Boxes'"):
        run(tator.url, tmp_path, "typo", localization_types=["Boxs"])


@pytest.mark.parametrize("page_size", [2, 1])
def test_paging_at_an_exact_multiple_of_the_page_size(tator, data, tmp_path, page_size):
    ref, _ = run(tator.url, tmp_path, "ref")
    # One query each: 4 media, 3 states and every localization are multiples of 2 (and 1),
    # so every listing ends on a full page, then an empty one.
    counts = {
        "/rest/Medias/1": len(data.media),
        "/rest/Localizations/1": len(data.localizations),
        "/rest/States/1": len(data.states),
    }
    assert all(n % 2 == 0 for n in counts.values()) or page_size == 1
    tator.seen.clear()
    store, _ = run(tator.url, tmp_path, "paged", page_size=page_size)
    assert [r.to_record() for r in store.rows()] == [r.to_record() for r in ref.rows()]
    for path, n in counts.items():
        assert sum(s.path == path for s in tator.seen) == n // page_size + 1, path


def test_media_batches_list_a_shared_track_once(tator, tmp_path):
    ref, _ = run(tator.url, tmp_path, "ref")
    store, _ = run(tator.url, tmp_path, "batched", media_per_query=1)
    assert [r.to_record() for r in store.rows()] == [r.to_record() for r in ref.rows()]


def test_media_filters_names_section_and_attributes(tator, data, tmp_path):
    by_name = {m["name"]: m for m in data.media}
    name = sorted(by_name)[0]
    store, _ = run(tator.url, tmp_path, "names", media=media(names=[name]))
    assert {r.meta["media"] for r in store.rows()} == {by_name[name]["id"]}
    with pytest.raises(MetadataError, match="'nope.mp4'"):
        run(tator.url, tmp_path, "missing", media=media(names=[name, "nope.mp4"]))
    store, m = run(
        tator.url, tmp_path, "warn", media=media(names=[name, "nope.mp4"], if_missing="warn")
    )
    assert m["selection"]["media_missing"] == ["nope.mp4"] and store.rows()
    annotated = {mid for mid, _ in expected_frames(data)}
    store, m = run(tator.url, tmp_path, "section", media=media(section="dive b"))
    in_b = {m["id"] for m in data.media if m["primary_section"] == 502}
    assert {r.meta["media"] for r in store.rows()} == in_b & annotated
    assert m["selection"]["media"] == len(in_b) < len(data.media)
    store, m = run(tator.url, tmp_path, "attr", media=media(attributes=["Camera::cam0"]))
    cam0 = {m["id"] for m in data.media if m["attributes"]["Camera"] == "cam0"}
    assert {r.meta["media"] for r in store.rows()} == cam0 & annotated
    assert m["selection"]["media"] == len(cam0) < len(data.media)
    # Values compare by the attribute's type (a bool, a float), as the server compares them.
    store, m = run(tator.url, tmp_path, "bool", media=media(attributes=["Flag::true"]))
    assert m["selection"]["media"] == sum(m["attributes"]["Flag"] for m in data.media) > 0
    store, m = run(tator.url, tmp_path, "float", media=media(attributes=["Depth::101"]))
    assert m["selection"]["media"] == 1
    # The server ignores a filter on an undeclared attribute and returns every media: the
    # client checks the value itself, and no media is an error, not an empty dataset.
    with pytest.raises(MetadataError, match="no media of project 1 match"):
        run(tator.url, tmp_path, "undeclared", media=media(attributes=["Kelp::5"]))


@pytest.mark.parametrize("status", [401, 403, 400])
def test_a_wrong_token_stops_with_one_message_and_writes_nothing(
    data, tmp_path, monkeypatch, status
):
    monkeypatch.setenv("TATOR_TOKEN", "wrong")
    with TatorStandin(data, token=TOKEN, auth_status=status) as srv:
        with pytest.raises(TokenRejected, match=r"refused the token in \$TATOR_TOKEN") as err:
            run(srv.url, tmp_path)
    assert err.value.exit_code == 2 and "wrong" not in str(err.value)
    assert not (tmp_path / "fetch").exists()
    monkeypatch.delenv("TATOR_TOKEN")
    with pytest.raises(ConfigError, match="TATOR_TOKEN, which is not set"):
        run("http://127.0.0.1:9", tmp_path)


@pytest.mark.parametrize("status", [429, 400, 503])
@pytest.mark.parametrize("paths", ["rest/*", "rest/GetFrame/*"])
def test_a_throttling_storm_is_waited_out(tator, tmp_path, status, paths, caplog):
    # Each attempt has its own deadline: waiting out Retry-After never uses it up.
    tator.storm(status, seconds=2.0, retry_after=1, paths=paths)
    start = time.monotonic()
    cfg = fast_fetch(retries=8, backoff=0.3, backoff_max=1.0, attempt_timeout=1.5)
    with caplog.at_level("DEBUG"):
        store, m = run(tator.url, tmp_path, fetch_cfg=cfg)
    assert time.monotonic() - start >= 1.9
    assert m["ok"] == len(store.rows()) > 0 and tator.storm_hits > 1
    assert TOKEN not in caplog.text


def test_a_storm_longer_than_the_retries_is_one_clear_error(tator, tmp_path):
    tator.storm(500, seconds=30)
    with pytest.raises(MetadataError, match="HTTP 500"):
        run(tator.url, tmp_path, fetch_cfg=fast_fetch(retries=1))
    assert not (tmp_path / "fetch").exists()


@pytest.mark.parametrize(
    "fault, changes, message, attempts",
    [
        ("corrupt", {}, "malformed response", 1),  # the same bytes again: not retried
        ("truncate", {}, "ChunkedEncodingError|ConnectionError|ProtocolError|IncompleteRead", 2),
        # Were the timeout not enforced, the server's 30 s stall would end as a truncation.
        ("stall:30", {"attempt_timeout": 1.0, "low_speed_time": 1.0}, "Timeout|timed out", 2),
    ],
)
def test_a_hostile_api_response_is_a_clear_error(
    tator, tmp_path, fault, changes, message, attempts
):
    tator.faults.set_default("rest/Localizations/*", fault)
    with pytest.raises(MetadataError, match=message):
        run(tator.url, tmp_path, fetch_cfg=fast_fetch(retries=1, **changes))
    asked = [s for s in tator.seen if s.path.startswith("/rest/Localizations/")]
    assert len(asked) == attempts
    assert not (tmp_path / "fetch").exists()


@pytest.mark.parametrize("fault", ["truncate", "reset", "stall:30", 503])
def test_one_broken_or_stalled_answer_is_retried(tator, tmp_path, fault):
    tator.faults.add("rest/Localizations/*", [fault])
    cfg = fast_fetch(retries=2, attempt_timeout=1.0, low_speed_time=1.0)
    store, m = run(tator.url, tmp_path, fetch_cfg=cfg)
    assert m["ok"] == len(store.rows()) > 0 and tator.faults.pending() == 0


def test_an_endless_error_body_is_bounded_too(tmp_path, monkeypatch):
    """A 503 whose body never ends (urllib3's Retry would drain it forever) is one error."""
    from tests.hostile import HostileServer, drip, head, raw, wait_until

    monkeypatch.setenv("TATOR_TOKEN", TOKEN)
    with HostileServer() as hostile:
        # 20 s to send, far past the 1 s deadline: were the deadline not enforced, the body
        # would arrive and fail as a schema that is not OpenAPI, not as DeadlineExceeded.
        hostile.scripts["/schema/"] = drip(b"x" * 100, 0.2)
        with pytest.raises(MetadataError, match="DeadlineExceeded.*after 2 attempt"):
            run(hostile.url, tmp_path, fetch_cfg=fast_fetch(retries=1, attempt_timeout=1.0))
        assert hostile.requests["/schema/"] == 2
        # Both attempts hung up on the drip rather than leaving it open.
        assert wait_until(lambda: hostile.hangups["/schema/"] == 2), hostile.hangups
        hostile.scripts["/schema/"] = raw(
            head("503 Busy", "Content-Length: 100000000") + b"x" * 100_000
        )
        with pytest.raises(MetadataError, match="ResponseTooLarge"):
            run(hostile.url, tmp_path, fetch_cfg=fast_fetch(retries=1), max_response_bytes=50_000)
        assert hostile.requests["/schema/"] == 3  # refused by its length: not retried


def test_a_response_over_the_cap_is_refused_while_reading(tator, tmp_path):
    with pytest.raises(MetadataError, match="ResponseTooLarge"):
        run(tator.url, tmp_path, max_response_bytes=2000)


def test_a_frame_redirected_to_another_origin_goes_without_the_token(data, tmp_path, monkeypatch):
    monkeypatch.setenv("TATOR_TOKEN", TOKEN)
    with TatorStandin(data, token=TOKEN) as srv:
        # Same server, another origin (localhost vs 127.0.0.1), like a presigned store URL.
        srv.frame_redirect = srv.url.replace("127.0.0.1", "localhost")
        store, m = run(srv.url, tmp_path)
        presigned = [s for s in srv.seen if s.path.startswith("/presigned/")]
    assert m["ok"] == len(store.rows()) == len(presigned) > 0
    assert not any("Authorization" in s.headers for s in presigned)


def test_the_token_is_stored_nowhere(tator, tmp_path):
    run(tator.url, tmp_path)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_metadata_is_kept_beside_the_store(tator, data, tmp_path):
    store, _ = run(tator.url, tmp_path)
    meta = store.root / "tator"
    locs = [json.loads(line) for line in (meta / "localizations.jsonl").read_text().splitlines()]
    assert [loc["id"] for loc in locs] == sorted(loc["id"] for loc in data.localizations)
    media = json.loads((meta / "media.json").read_text())
    assert [m["id"] for m in media] == sorted(m["id"] for m in data.media)
    states = [json.loads(line) for line in (meta / "states.jsonl").read_text().splitlines()]
    assert [s["localizations"] for s in states] == [s["localizations"] for s in data.states]
    assert {t["dtype"] for t in json.loads((meta / "localization_types.json").read_text())} == {
        "box",
        "dot",
        "line",
        "poly",
    }


@pytest.mark.parametrize(
    "path, error",
    [
        ("/drip", DeadlineExceeded),  # 4 B/s: every read returns data, the deadline stops it
        ("/trickle", DeadlineExceeded),
        ("/big-length", ResponseTooLarge),  # refused by its Content-Length
        ("/big-chunked", ResponseTooLarge),  # refused while reading
        ("/loop", requests.exceptions.TooManyRedirects),  # the API never follows redirects
        ("/to-good", requests.exceptions.TooManyRedirects),
        ("/chunk-negative", requests.exceptions.ChunkedEncodingError),
    ],
)
def test_the_api_session_bounds_every_response(path, error):
    from tests.hostile import HostileServer

    # Unbounded, /drip and /trickle would arrive whole (in 100 s and 16 s) and raise nothing.
    cfg = fast_fetch(retries=0, attempt_timeout=1.0, low_speed_time=2.0)
    session = session_for(cfg, max_bytes=1 << 20)
    with HostileServer() as hostile:
        with pytest.raises(error):
            session.get(hostile.url + path)
        # One request, and no redirect followed (/to-good points at /good).
        assert hostile.requests == {path: 1}


# ---------------------------------------------------------------------------------------------
# clean-annotations, VOC and COCO


def pixel(v: float) -> int:
    """The documented rounding rule: nearest pixel edge, halves up."""
    return math.floor(v + 0.5)


def expected_boxes(data, min_size=2.0) -> dict[tuple[int, int], list[tuple]]:
    """Boxes in pixels of the frame actually served (its size, not media.width/height)."""
    out = {}
    for (mid, frame), locs in expected_frames(data).items():
        w, h = data.frame_size[mid]
        boxes = []
        for loc in locs:
            x0, y0 = pixel(loc["x"] * w), pixel(loc["y"] * h)
            x1, y1 = pixel((loc["x"] + loc["width"]) * w), pixel((loc["y"] + loc["height"]) * h)
            x0, x1 = (min(max(v, 0), w) for v in (x0, x1))
            y0, y1 = (min(max(v, 0), h) for v in (y0, y1))
            if x1 - x0 >= min_size and y1 - y0 >= min_size:
                boxes.append((class_of(data, loc), x0, y0, x1, y1))
        if boxes:
            out[mid, frame] = boxes
    return out


@pytest.fixture
def exported(tator, tmp_path):
    """Fetch, clean and export as VOC and COCO; return (clean store, metrics, tmp)."""
    fetched, _ = run(tator.url, tmp_path)
    kept, names, metrics, _ = clean(
        fetched, SOURCE, source_defaults("tator"), group_defaults("clean"), group_defaults("split")
    )
    (tmp_path / "clean").mkdir()
    write_manifest(tmp_path / "clean", rebase(kept, tmp_path / "fetch", tmp_path / "clean"), names)
    store = Store(tmp_path / "clean")
    export_folders(store, tmp_path / "voc", "voc")
    export_folders(store, tmp_path / "coco", "coco")
    return store, metrics, tmp_path


def test_clean_puts_boxes_on_the_pixels_of_the_frame_received(exported, data):
    store, m, _ = exported
    want = expected_boxes(data)
    rows = store.rows()
    assert {(r.meta["media"], r.meta["frame"]) for r in rows} == set(want)
    for row in rows:
        mid = row.meta["media"]
        assert (row.width, row.height) == data.frame_size[mid] != (1920, 1080)
        got = [(b["label"], b["x"], b["y"], b["x"] + b["w"], b["y"] + b["h"]) for b in row.boxes]
        assert got == want[mid, row.meta["frame"]]
    assert m["boxes_clamped"] == 2 and m["boxes_dropped_degenerate"] == 1
    assert m["source"]["non_box_skipped"] == {"dot": 2, "line": 1, "poly": 1}
    assert m["size_mismatch"] == len(rows)


def test_voc_xml_matches_the_pixel_rule_box_by_box(exported, data):
    store, _, tmp = exported
    voc = tmp / "voc"
    want = expected_boxes(data)
    by_file = {r.item_id: r for r in store.rows()}
    ids = (voc / "ImageSets/Main/default.txt").read_text().split()
    assert sorted(ids) == sorted(by_file)
    for item_id in ids:
        row = by_file[item_id]
        doc = etree.parse(str(voc / "Annotations" / f"{item_id}.xml"))
        assert doc.findtext("filename") == f"{item_id}.jpg"
        assert (voc / "JPEGImages" / f"{item_id}.jpg").read_bytes() == store.read(row)
        w, h = data.frame_size[row.meta["media"]]
        assert [doc.findtext(f"size/{k}") for k in ("width", "height", "depth")] == [
            str(w),
            str(h),
            "3",
        ]
        got = [
            (
                o.findtext("name"),
                *(int(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")),
            )
            for o in doc.iterfind("object")
        ]
        # VOC: 1-based inclusive pixels, so xmin = x0 + 1 and xmax = x1.
        assert got == [
            (c, x0 + 1, y0 + 1, x1, y1)
            for c, x0, y0, x1, y1 in want[row.meta["media"], row.meta["frame"]]
        ]
        assert all(
            o.findtext(k)
            for o in doc.iterfind("object")
            for k in ("pose", "truncated", "difficult")
        )
    labelmap = (voc / "labelmap.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in labelmap if not line.startswith("#")] == store.classes


def test_coco_json_loads_in_pycocotools_with_the_same_boxes(exported, data):
    from pycocotools.coco import COCO

    store, _, tmp = exported
    coco = COCO(str(tmp / "coco/annotations/instances_default.json"))
    cats = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert list(cats.values()) == store.classes and min(cats) == 1
    want = expected_boxes(data)
    per_class = Counter(c for boxes in want.values() for c, *_ in boxes)
    assert {cats[i]: len(coco.getAnnIds(catIds=[i])) for i in cats} == dict(per_class)
    by_file = {f"{r.item_id}.jpg": r for r in store.rows()}
    assert len(coco.getImgIds()) == len(by_file)
    for img in coco.loadImgs(coco.getImgIds()):
        row = by_file[img["file_name"]]
        assert (tmp / "coco/images/default" / img["file_name"]).read_bytes() == store.read(row)
        assert (img["width"], img["height"]) == data.frame_size[row.meta["media"]]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        got = [(cats[a["category_id"]], *a["bbox"]) for a in anns]
        expect = want[row.meta["media"], row.meta["frame"]]
        assert got == [(c, x0, y0, x1 - x0, y1 - y0) for c, x0, y0, x1, y1 in expect]
        assert all(a["iscrowd"] == 0 and a["area"] == a["bbox"][2] * a["bbox"][3] for a in anns)


def datumaro_read(fmt: str, path: Path) -> dict:
    """Import a folder with Datumaro (in its own venv); return what it found."""
    if not DATUMARO.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{DATUMARO} is missing: `make test` installs it")
        pytest.skip("Datumaro's venv is missing: run `make .venv-datumaro/.installed`")
    tool = ROOT / "tests" / "tools" / "datumaro_read.py"
    proc = subprocess.run(
        [str(DATUMARO), str(tool), fmt, str(path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_voc_and_coco_open_unchanged_in_datumaro(exported, data):
    store, _, tmp = exported
    want = {}
    for row in store.rows():
        boxes = expected_boxes(data)[row.meta["media"], row.meta["frame"]]
        want[row.item_id] = {
            "image": True,
            "size": list(data.frame_size[row.meta["media"]]),
            "boxes": [[c, x0, y0, x1 - x0, y1 - y0] for c, x0, y0, x1, y1 in boxes],
        }
    voc = datumaro_read("voc_detection", tmp / "voc")
    coco = datumaro_read("coco_instances", tmp / "coco")
    assert voc["labels"] == store.classes
    assert coco["labels"] == store.classes
    for found in (voc, coco):  # (readers order a frame's boxes their own way)
        for item in found["items"].values():
            item["boxes"].sort()
    for item in want.values():
        item["boxes"].sort()
    assert voc["items"] == want
    assert coco["items"] == want


def test_the_pixel_rule_rounds_halves_up_and_clamps():
    from stages.core.boxes import coco_box, pixel_edges, voc_box

    box = {"x": 0.1, "y": 0.2, "w": 0.25, "h": 0.5}  # the note's example, on 1920x1080
    assert pixel_edges(box, 1920, 1080, 1920, 1080) == ((192, 216, 672, 756), False)
    clean = {"x": 192, "y": 216, "w": 480, "h": 540}
    assert voc_box(clean) == (193, 217, 672, 756) and coco_box(clean) == [192, 216, 480, 540]
    # Halves go up (Python's round() would give 2 and 4), on both edges.
    assert pixel_edges({"x": 2.5, "y": 3.5, "w": 2.0, "h": 1.0}, 1, 1, 10, 10) == (
        (3, 4, 5, 5),
        False,
    )
    # Outside the image: clamped, and said so.
    assert pixel_edges({"x": -0.05, "y": 0.9, "w": 0.1, "h": 0.2}, 100, 100, 100, 100) == (
        (0, 90, 5, 100),
        True,
    )


def mutated(change) -> TatorStandin:
    """A stand-in whose project has one object changed by `change(data)`."""
    data = generate()
    change(data)
    return TatorStandin(data, token=TOKEN)


def first_box(data) -> dict:
    return next(loc for loc in data.localizations if loc["type"] == BOX_TYPE)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: first_box(d).update(media=[d.media[0]["id"]]), "localization 1: media is list"),
        (lambda d: first_box(d).update(frame=True), "localization 1: frame is bool"),
        (lambda d: first_box(d).update(attributes=["x"]), "localization 1: attributes is list"),
        (lambda d: d.states[0].update(localizations=7), "localizations is int"),
        (lambda d: d.media[0].update(name=None), "name is NoneType"),
        (lambda d: d.media[0].update(width="1920"), "width is str"),
        (lambda d: d.localization_types[0].pop("name"), "localization type 7: name"),
    ],
)
def test_a_wrongly_shaped_answer_is_one_clear_error(tmp_path, monkeypatch, change, message):
    monkeypatch.setenv("TATOR_TOKEN", TOKEN)
    with mutated(change) as srv, pytest.raises(MetadataError, match=message):
        run(srv.url, tmp_path)
    assert not (tmp_path / "fetch").exists()


def test_odd_values_become_counts_not_crashes(tmp_path, monkeypatch):
    monkeypatch.setenv("TATOR_TOKEN", TOKEN)

    def change(d):
        boxes = [loc for loc in d.localizations if loc["type"] == BOX_TYPE]
        boxes[0]["x"] = math.nan
        boxes[1]["width"] = math.inf
        boxes[2]["frame"] = 10_000  # beyond num_frames
        boxes[3]["attributes"] = {"ScientificName": "  Sebastolobus \t"}
        boxes[4]["attributes"] = {"ScientificName": True}
        boxes[5]["attributes"] = {"ScientificName": "ctl\x01x"}
        d.media[1]["attributes"]["Note"] = "\udfff lone surrogate"
        d.media[2]["num_frames"] = None

    with mutated(change) as srv:
        store, m = run(srv.url, tmp_path)
    sel = m["selection"]
    assert sel["boxes_invalid"] == 3
    assert "Sebastolobus" in store.classes and "ctl\\x01x" in store.classes
    assert not any(c != c.strip() or c == "True" for c in store.classes)
    assert b"\\udfff" in (store.root / "tator/media.json").read_bytes()


def test_class_names_voc_readers_choke_on_are_declared_for_them(tmp_path):
    from stages.core.store import Row, write_store
    from tests.test_clean_export import jpeg

    src = tmp_path / "x.jpg"
    src.write_bytes(jpeg(40, 30, (9, 9, 9)))
    names = ["background", "#hash", "Genus: species", "plain"]
    rows = [
        Row(
            f"t/{i}",
            "t",
            str(i),
            url="http://h/x.jpg",
            width=40,
            height=30,
            labels=[name],
            boxes=[{"label": name, "x": 2.0, "y": 3.0, "w": 10.0, "h": 8.0}],
        )
        for i, name in enumerate(names)
    ]
    write_store(
        tmp_path / "s", rows, lambda r: src, 1 << 20, classes=names, executor=LocalExecutor(2)
    )
    export_folders(Store(tmp_path / "s"), tmp_path / "voc", "voc")
    assert json.loads((tmp_path / "voc/dataset_meta.json").read_text())["labels"] == names
    found = datumaro_read("voc_detection", tmp_path / "voc")
    assert found["labels"] == names
    assert sorted(b[0] for item in found["items"].values() for b in item["boxes"]) == sorted(names)
