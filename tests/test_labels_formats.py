"""Labels in JSON, CSV and XML: the same facts in each, and each reads back the same."""

from __future__ import annotations

import csv
import io
import json

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
