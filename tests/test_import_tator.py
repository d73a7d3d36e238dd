"""import@<source> to Tator and labels@<source> back: the real `tator` client against the
stand-in's upload, media-creation and annotation routes."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from stages.core.errors import MetadataError
from stages.core.store import Store
from stages.formats.labels import Label, from_csv, from_json, from_xml
from stages.import_media import run_import
from stages.labels import FILES, collect, write_labels
from stages.pipeline.compose import group_defaults, source_defaults
from stages.sources.tator.api import TokenRejected
from stages.targets.tator import MediaTypeUnfit, TatorTarget
from standins.tator import BOX_TYPE, DOT_TYPE, EVENT_TYPE, TRACK_TYPE, TatorStandin, empty

TOKEN = "import-token-5ecret"
RETRY = group_defaults("fetch", retries=4, backoff=0.01, backoff_max=0.5)


@pytest.fixture
def tator(monkeypatch):
    """An empty Tator project (types only) on loopback, and TATOR_TOKEN set to its token."""
    monkeypatch.setenv("TATOR_TOKEN", TOKEN)
    with TatorStandin(empty(), token=TOKEN) as srv:
        yield srv


def settings(srv, **changes):
    """The shipped import settings, enabled, sending to the stand-in."""
    shipped = dataclasses.asdict(source_defaults("videodir").import_to.tator)
    tator = {**shipped, "host": srv.url, **changes.pop("tator", {})}
    import_to = {"enabled": True, "target": "tator", "shard_size": 2, "tator": tator, **changes}
    return source_defaults("videodir", import_to=import_to).import_to


def run(cfg, fetched):
    """Import the fetched folder into the stand-in; return record, job, metrics, target."""
    target = TatorTarget(cfg.tator, RETRY, workers=cfg.workers)
    try:
        return (*run_import(cfg, Store(fetched), target, "videodir", RETRY), target)
    finally:
        target.close()


def test_files_land_once_in_camera_sections_with_their_attributes(tator, fetched):
    cameras = {"lobby": {"section": "Entrance", "short_side": 240}}
    cfg = settings(tator, short_side=480, cameras=cameras)
    record, job, metrics, _ = run(cfg, fetched)
    assert (metrics["sent"], metrics["failed"], job["status"]) == (6, 0, "complete")
    media = tator.data.media
    assert len(media) == 6  # the same bytes under two names are one media
    sections = {s["id"]: s["name"] for s in tator.data.sections}
    by_id = {str(m["id"]): m for m in media}
    for row in record:
        m = by_id[row["target_id"]]
        # The bytes that arrived are the file's; the attributes say what it is.
        assert tator.blobs[m["id"]]["sha256"] == row["sha256"] == m["attributes"]["sha256"]
        assert m["attributes"]["Camera"] == row["camera"]
        assert m["attributes"]["Timestamp"].startswith(row["timestamp"][:19])
        want = ("Entrance", 240) if row["camera"] == "lobby" else ("gate", 480)
        assert (sections[m["primary_section"]], m["attributes"]["ShortSide"]) == want
    # A re-run finds every file by its hash and sends nothing.
    again, job2, m2, _ = run(cfg, fetched)
    assert (m2["sent"], m2["present"], len(tator.data.media)) == (0, 6, 6)
    assert again == record and job2 == job
    # One section per camera, created once.
    assert sorted(s["name"] for s in tator.data.sections) == ["Entrance", "gate"]


def test_a_throttling_storm_and_a_reset_mid_upload_are_retried(tator, fetched):
    tator.storm(429, seconds=1.0, retry_after=1, paths="rest/*")  # Retry-After: whole seconds
    # Two uploads die halfway through (our retry sends the file again); one part is refused
    # with a 503 (tator's own part retry sends it again).
    tator.faults.add("upload/*", ["reset", "reset", 503])
    record, job, metrics, _ = run(settings(tator, workers=3), fetched)
    assert tator.storm_hits > 0 and tator.faults.pending() == 0
    assert (metrics["sent"], metrics["failed"], job["status"]) == (6, 0, "complete")
    assert len(tator.data.media) == 6 and len({r["target_id"] for r in record}) == 6
    assert {b["sha256"] for b in tator.blobs.values()} == {r["sha256"] for r in record}
    # The token went to the API only: never with the bytes to the presigned URLs.
    puts = [s for s in tator.seen if s.method == "PUT"]
    assert puts and not any("Authorization" in s.headers for s in puts)
    assert all(s.headers.get("Authorization") == f"Token {TOKEN}" for s in tator.seen
               if s.path.startswith("/rest/"))  # fmt: skip


def test_a_lost_creation_answer_is_not_uploaded_twice(tator, fetched):
    # The server creates the media, then the answer is cut off: the retry finds it by hash.
    tator.faults.add("rest/Transcodes/*", ["truncate"])
    record, _, metrics, _ = run(settings(tator, workers=1), fetched)
    assert metrics["failed"] == 0 and tator.faults.pending() == 0
    assert len(tator.data.media) == 6 == len({r["target_id"] for r in record})


def test_a_media_type_without_the_hash_attribute_is_refused_before_any_upload(tator, fetched):
    cfg = settings(tator, tator={"media_type": 3})  # "Video": no sha256 attribute
    with pytest.raises(MediaTypeUnfit, match=r"sha256 \(undeclared; needs string\)"):
        run(cfg, fetched)
    assert tator.data.media == [] and tator.data.sections == []


def test_the_hash_is_compared_not_trusted_to_filter(tator, fetched):
    cfg = settings(tator)
    run(cfg, fetched)
    # A filter on an undeclared attribute is ignored by the server (every media comes back);
    # the hash attribute renamed to one the type lacks must not make files look present.
    target = TatorTarget(cfg.tator, RETRY)
    try:
        target.attributes["hash"] = "Undeclared"
        hits = target.api.call("get_media_list", 1, attribute=["Undeclared::x"])
        assert len(hits) == 6  # the server's answer: everything
        assert target._find("0" * 64) is None and target.existing() == {}
    finally:
        target.close()


def test_large_files_go_up_in_parts(tator, fetched, monkeypatch):
    import stages.targets.tator as module

    monkeypatch.setattr(module, "CHUNK_SIZE", 16 << 10)  # the test clips: several parts each
    record, _, metrics, _ = run(settings(tator), fetched)
    assert metrics["sent"] == 6 and metrics["failed"] == 0
    assert any(u["num_parts"] > 1 for u in tator.uploads.values())
    assert {b["sha256"] for b in tator.blobs.values()} == {r["sha256"] for r in record}


def test_a_file_tator_cannot_type_fails_alone(tator, fetched):
    import io

    from stages.targets import Upload

    target = TatorTarget(settings(tator).tator, RETRY)
    try:
        place = target.register("cam", {"section": "cam"})
        for name, ok in (("clip.h264", False), ("clip.MKV", True)):
            data = name.encode() * 100
            item = Upload(
                sha256=hashlib.sha256(data).hexdigest(), name=name, size=len(data),
                camera="cam", timestamp="2024-05-01T08:00:00Z", location=None, settings={},
                open=lambda data=data: io.BytesIO(data),
            )  # fmt: skip
            if ok:
                assert target.upload(item, place)
            else:
                with pytest.raises(OSError, match="cannot tell its media type from '.h264'"):
                    target.upload(item, place)
    finally:
        target.close()
    assert [m["name"] for m in tator.data.media] == ["clip.MKV"]


def test_a_refused_token_is_one_clear_error(tator, fetched, monkeypatch):
    monkeypatch.setenv("TATOR_TOKEN", "wrong")
    with pytest.raises(TokenRejected, match=r"refused the token in \$TATOR_TOKEN"):
        run(settings(tator), fetched)
    assert tator.data.media == []


def annotate(target: TatorTarget, record: list[dict]) -> set[Label]:
    """Annotate the imported media through the real client, as annotators would; return
    the labels a reader should bring back (the unclassed and non-box ones are not)."""
    ids = sorted({int(r["target_id"]) for r in record})
    first, second = ids[0], ids[1]
    rows = {int(r["target_id"]): r for r in record}

    def call(op, body):
        return target.api.call(op, 1, body=body)["id"]

    box = {"x": 0.1, "y": 0.2, "width": 0.3, "height": 0.25}
    locs = call(
        "create_localization_list",
        [
            {"type": BOX_TYPE, "media_id": first, "frame": 3, **box,
             "attributes": {"ScientificName": "person"}},
            {"type": BOX_TYPE, "media_id": first, "frame": 4, **box},  # class from its track
            {"type": BOX_TYPE, "media_id": first, "frame": 6, **box},  # in the track too
            {"type": BOX_TYPE, "media_id": second, "frame": 0, **box},  # no class at all
            {"type": DOT_TYPE, "media_id": second, "frame": 1, "x": 0.5, "y": 0.5,
             "attributes": {"ScientificName": "person"}},  # not a box
        ],
    )  # fmt: skip
    call(
        "create_state_list",
        [
            {"type": TRACK_TYPE, "media_ids": [first], "localization_ids": locs[1:3],
             "attributes": {"ScientificName": "vehicle"}},
            {"type": EVENT_TYPE, "media_ids": [second], "frame": 7,
             "attributes": {"ScientificName": "animal"}},
            {"type": EVENT_TYPE, "media_ids": [second], "frame": 8},  # no class
        ],
    )  # fmt: skip

    def label(mid, name, frame, end=None, with_box=True):
        r = rows[mid]
        geometry = tuple(box.values()) if with_box else None
        return Label(r["timestamp"], r["camera"], str(mid), name, frame, end, geometry)

    return {
        label(first, "person", 3),
        label(first, "vehicle", 4),
        label(first, "vehicle", 6),
        label(first, "vehicle", 4, 6, with_box=False),  # the track over its boxes' frames
        label(second, "animal", 7, with_box=False),
    }


def test_labels_come_back_in_three_formats_that_agree(tator, fetched, tmp_path):
    cfg = settings(tator)
    record, job, _, _ = run(cfg, fetched)
    target = TatorTarget(cfg.tator, RETRY)
    try:
        want = annotate(target, record)
        labels, metrics = collect(record, target)
    finally:
        target.close()
    assert set(labels) == want and len(labels) == len(want)
    assert metrics["files"] == 6 and metrics["files_labelled"] == 2
    assert metrics["skipped"]["not_boxes"] == 1 and metrics["skipped"]["states_without_class"] == 1
    assert metrics["skipped"]["boxes_without_class_or_geometry"] == 1
    write_labels(tmp_path, job["job_id"], labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)
    assert from_json((tmp_path / "labels.json").read_text()) == (job["job_id"], labels)
    assert from_csv((tmp_path / "labels.csv").read_text()) == labels
    assert from_xml((tmp_path / "labels.xml").read_bytes()) == (job["job_id"], labels)
    # Media deleted on the platform: their labels cannot be read, and that is said.
    tator.data.media = [m for m in tator.data.media if str(m["id"]) != labels[0].media]
    target = TatorTarget(cfg.tator, RETRY)
    try:
        with pytest.raises(MetadataError, match=r"1 imported file\(s\) are not on the target"):
            collect(record, target)
    finally:
        target.close()


def test_folder_target_labels_are_read_from_their_files(tmp_path, fetched):
    from stages.targets.folder import FolderTarget

    import_to = {
        "enabled": True,
        "target": "folder",
        "folder": str(tmp_path / "t"),
        "shard_size": 2,
    }
    cfg = source_defaults("videodir", import_to=import_to).import_to
    target = FolderTarget(cfg.folder)
    record, job, _ = run_import(cfg, Store(fetched), target, "videodir", RETRY)
    rel = record[0]["target_id"]
    (tmp_path / "t" / f"{rel}.labels.json").write_text(
        '[{"label": "person", "frame": 2, "frame_end": null, "box": [0.1, 0.1, 0.2, 0.2]},'
        ' {"label": "", "frame": 1, "frame_end": null, "box": null},'
        ' {"label": "animal", "frame": 0, "frame_end": 9, "box": null}]'
    )
    labels, metrics = collect(record, target)
    assert [(lab.label, lab.frame, lab.frame_end) for lab in labels] == [
        ("animal", 0, 9),
        ("person", 2, None),
    ]
    assert metrics["skipped"] == {"without_class": 1} and metrics["files_labelled"] == 1
    (tmp_path / "t" / f"{rel}.labels.json").write_text('[{"label": "x", "frame": -1}]')
    with pytest.raises(MetadataError, match="malformed: frame -1"):
        collect(record, target)
