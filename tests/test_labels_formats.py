"""Labels in JSON, CSV and XML: the same facts in each, and each reads back the same."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET

import pytest
from lxml import etree

from stages.formats.labels import (
    CSV_COLUMNS,
    Label,
    from_csv,
    from_json,
    from_xml,
    order,
    schema,
    to_csv,
    to_json,
    to_xml,
)
from stages.labels import write_labels

LABELS = [
    Label("2024-05-01T12:00:00Z", "lobby", "17", "person", 3, None, (0.1, 0.2, 0.1 + 0.2, 0.4)),
    Label("2024-05-01T12:00:00Z", "lobby", "17", "person", 9, None, (0.5, 0.5, 0.25, 0.125)),
    Label("2024-05-01T12:00:00Z", "gate", "18", "vehicle", 0, 41, None),  # a state over frames
    Label("2024-05-02T06:30:00Z", "lobby", "19", "Sebastes «miniatus», a/b", None, None, None),
]  # fmt: skip


def test_json_has_the_originals_shape_and_reads_back():
    doc = json.loads(to_json("job-1", LABELS))
    assert set(doc) == {"job_id", "earliest_date", "latest_date", "labels"}
    assert (doc["earliest_date"], doc["latest_date"]) == (
        "2024-05-01T12:00:00Z",
        "2024-05-02T06:30:00Z",
    )
    noon = doc["labels"]["2024-05-01T12:00:00Z"]
    assert noon["cameras"] == {"gate": {"name": "gate"}, "lobby": {"name": "lobby"}}
    assert len(noon["labels"]) == 3
    assert from_json(to_json("job-1", LABELS)) == ("job-1", sorted(LABELS, key=order))


def test_csv_has_one_row_per_occurrence_and_reads_back():
    text = to_csv(LABELS)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(CSV_COLUMNS) and len(rows) == len(LABELS)
    assert from_csv(text) == sorted(LABELS, key=order)


def test_xml_is_valid_against_its_schema_and_reads_back():
    data = to_xml("job-1", LABELS)
    schema().assertValid(etree.fromstring(data))
    assert from_xml(data) == ("job-1", sorted(LABELS, key=order))


# Boxes drawn on a 640 x 480 frame, in pixels (left, top, width, height); the files hold them
# normalised by the frame's width (x, w) and height (y, h).
NOON, NEXT_DAY = "2024-05-01T12:00:00Z", "2024-05-02T06:30:00Z"
PIXELS = {3: (64, 96, 128, 60), 9: (320, 240, 160, 120)}
ON_DISK = [  # given out of order: the files sort by time, camera, media, then frame
    Label(NEXT_DAY, "lobby", "19", "Sebastes «miniatus», a/b", None, None, None),
    *[
        Label(NOON, "lobby", "17", "person", f, None, (x / 640, y / 480, w / 640, h / 480))
        for f, (x, y, w, h) in PIXELS.items()
    ],
    Label(NOON, "gate", "18", "vehicle", 0, 41, None),
]
# By hand: 64 / 640 = 0.1, 96 / 480 = 0.2, 128 / 640 = 0.2, 60 / 480 = 0.125;
# 320 / 640 = 0.5, 240 / 480 = 0.5, 160 / 640 = 0.25, 120 / 480 = 0.25.
BOX_3 = {"x": "0.1", "y": "0.2", "w": "0.2", "h": "0.125"}
BOX_9 = {"x": "0.5", "y": "0.5", "w": "0.25", "h": "0.25"}


def test_the_csv_file_holds_the_normalised_boxes_row_by_row(tmp_path):
    write_labels(tmp_path, "job-7", ON_DISK)
    text = (tmp_path / "labels.csv").read_text(encoding="utf-8")
    lines = text.split("\n")
    assert lines[0] == "timestamp,camera,media,label,frame,frame_end,x,y,w,h"
    assert lines[-1] == "" and len(lines) == 6  # a header, four rows, a final newline
    # A name with a comma is quoted, so it stays one cell.
    assert lines[4] == f'{NEXT_DAY},lobby,19,"Sebastes «miniatus», a/b",,,,,,'
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[1:] == [
        [NOON, "gate", "18", "vehicle", "0", "41", "", "", "", ""],
        [NOON, "lobby", "17", "person", "3", "", *BOX_3.values()],
        [NOON, "lobby", "17", "person", "9", "", *BOX_9.values()],
        [NEXT_DAY, "lobby", "19", "Sebastes «miniatus», a/b", "", "", "", "", "", ""],
    ]
    # Scaled back by the frame's size, each box is the pixels it was drawn with.
    for row in rows[2:4]:
        x, y, w, h = (float(v) for v in row[6:])
        assert (x * 640, y * 480, w * 640, h * 480) == PIXELS[int(row[4])]


def test_the_xml_file_holds_the_normalised_boxes_label_by_label(tmp_path):
    write_labels(tmp_path, "job-7", ON_DISK)
    root = ET.parse(tmp_path / "labels.xml").getroot()  # the standard library, not lxml
    assert root.tag == "labels"
    assert root.attrib == {"job_id": "job-7", "earliest_date": NOON, "latest_date": NEXT_DAY}
    assert [child.tag for child in root] == ["label"] * 4
    where = {"timestamp": NOON, "camera": "lobby", "media": "17", "name": "person"}
    found = [(el.attrib, [(b.tag, b.attrib) for b in el]) for el in root]
    assert found == [
        ({**where, "camera": "gate", "media": "18", "name": "vehicle", "frame": "0",
          "frame_end": "41"}, []),
        ({**where, "frame": "3"}, [("box", BOX_3)]),
        ({**where, "frame": "9"}, [("box", BOX_9)]),
        ({**where, "timestamp": NEXT_DAY, "media": "19", "name": "Sebastes «miniatus», a/b"},
         []),
    ]  # fmt: skip


def test_the_json_file_holds_the_normalised_boxes_by_time(tmp_path):
    write_labels(tmp_path, "job-7", ON_DISK)
    doc = json.loads((tmp_path / "labels.json").read_text(encoding="utf-8"))
    noon = doc["labels"][NOON]["labels"]
    assert [(item["media"], item["frame"], item["box"]) for item in noon] == [
        ("18", 0, None),
        ("17", 3, [0.1, 0.2, 0.2, 0.125]),
        ("17", 9, [0.5, 0.5, 0.25, 0.25]),
    ]
    assert [item["media"] for item in doc["labels"][NEXT_DAY]["labels"]] == ["19"]


def test_floats_are_written_with_every_digit():
    # 0.1 + 0.2 is 0.30000000000000004 in binary floating point; a rounded cell would read
    # back as another number.
    label = Label(NOON, "c", "1", "x", 0, None, (0.1 + 0.2, 1 / 3, 0.5, 0.25))
    row = list(csv.reader(io.StringIO(to_csv([label]))))[1]
    assert row[6:] == ["0.30000000000000004", "0.3333333333333333", "0.5", "0.25"]
    box = ET.fromstring(to_xml("j", [label])).find("label/box")
    assert [box.get(k) for k in "xywh"] == row[6:]


def test_an_empty_xml_file_has_no_dates(tmp_path):
    write_labels(tmp_path, "job-0", [])
    root = ET.parse(tmp_path / "labels.xml").getroot()
    assert root.attrib == {"job_id": "job-0"} and len(root) == 0
    header = "timestamp,camera,media,label,frame,frame_end,x,y,w,h\n"
    assert (tmp_path / "labels.csv").read_text(encoding="utf-8") == header


def test_the_three_formats_carry_the_same_facts():
    via_json = from_json(to_json("j", LABELS))[1]
    via_xml = from_xml(to_xml("j", LABELS))[1]
    assert via_json == from_csv(to_csv(LABELS)) == via_xml == sorted(LABELS, key=order)


def test_an_empty_set_of_labels_is_valid_everywhere():
    assert from_json(to_json("j", [])) == ("j", [])
    assert from_csv(to_csv([])) == []
    assert from_xml(to_xml("j", [])) == ("j", [])


@pytest.mark.parametrize(
    "xml",
    [
        b'<labels><label timestamp="2024-05-01T12:00:00Z" camera="c" media="1" name="x"/></labels>',
        b'<labels job_id="j"><label camera="c" media="1" name="x"/></labels>',
        b'<labels job_id="j"><label timestamp="yesterday" camera="c" media="1" name="x"/></labels>',
        b'<labels job_id="j"><label timestamp="2024-05-01T12:00:00Z" camera="c" media="1" '
        b'name="x" frame="-1"/></labels>',
    ],
)
def test_xml_outside_the_schema_is_refused(xml):
    with pytest.raises(etree.DocumentInvalid):
        from_xml(xml)
