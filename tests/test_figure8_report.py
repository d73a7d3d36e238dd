"""Figure Eight job reports: the zipped CSV, broken links and their re-upload lists."""

from __future__ import annotations

import csv
import io
import zipfile

import pytest

from stages.core.errors import MetadataError
from stages.sources.figure8.report import broken_csvs, is_broken, read_report
from standins.figure8 import REPORT_COLUMNS, report_row, report_zip

IMG = "https://s3.example/upload/3D_example_x_00_y_0{}_montage_0.png"
ANN = "https://fe.example/annotations/{}.png"


def write(tmp_path, data: bytes, name="job_1_full_report.zip"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "value, broken",
    [
        (True, True), (False, False), ("true", True), ("TRUE", True), ("True", True),
        ("false", False), ("FALSE", False), ("1", True), ("0", False), ("", False),
        (" true ", True), (None, False), ("1.0", True), ("0.0", False),
    ],
)  # fmt: skip
def test_broken_link_is_parsed_in_every_spelling(value, broken):
    assert is_broken(value, 2) is broken


def test_an_unknown_broken_link_value_names_its_row():
    with pytest.raises(MetadataError, match="row 7: broken_link is 'yes'"):
        is_broken("yes", 7)


def test_rows_split_into_downloads_and_broken_links(tmp_path):
    rows = [
        report_row(0, IMG.format(0), ANN.format(0)),
        report_row(1, IMG.format(1), None, broken="TRUE"),  # re-uploaded below
        report_row(2, IMG.format(2), None, broken="1"),  # stays broken
        report_row(3, IMG.format(1), ANN.format(3), broken="False"),
        report_row(4, IMG.format(0), None, broken="true"),  # already annotated above
        report_row(5, IMG.format(2), None, broken="true"),  # the same broken image again
    ]
    report = read_report(write(tmp_path, report_zip(rows)), 1 << 20)
    assert [r["_annotation_url"] for r in report.good] == [ANN.format(0), ANN.format(3)]
    assert [r["image_url"] for r in report.broken] == [IMG.format(2)]
    full, reupload = broken_csvs(report)
    (row,) = list(csv.DictReader(io.StringIO(full.decode())))
    assert list(row) == list(REPORT_COLUMNS) and row["_unit_id"] == "1002"
    assert reupload.decode().splitlines() == ["identifier,image_url", f"3D_example,{IMG.format(2)}"]


def test_a_report_without_the_broken_link_column_has_no_broken_rows(tmp_path):
    columns = [c for c in REPORT_COLUMNS if c != "broken_link"]
    rows = [{k: v for k, v in report_row(0, IMG.format(0), ANN.format(0)).items() if k in columns}]
    report = read_report(write(tmp_path, report_zip(rows, columns=columns)), 1 << 20)
    assert len(report.good) == 1 and report.broken == []


def test_a_bad_report_is_one_clear_error(tmp_path):
    good = report_row(0, IMG.format(0), ANN.format(0))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "no csv here")
    damaged = bytearray(report_zip([good] * 20))
    damaged[60:80] = b"\xff" * 20  # inside the deflated member: found when read
    cases = [
        (buf.getvalue(), "expected exactly one .csv member"),
        (bytes(damaged), "corrupt zip"),
        (b"not,a,report\n1,2,3\n", r"lacks the column\(s\)"),  # a bare CSV is read as is
        (report_zip([good], columns=["_unit_id", "annotation"]), r"lacks the column\(s\)"),
        (report_zip([{**good, "annotation": "{not json"}]), "row 2: the annotation cell"),
        (report_zip([{**good, "annotation": '{"url": "file:///etc/passwd"}'}]), "http"),
        (report_zip([{**good, "broken_link": "maybe"}]), "row 2: broken_link"),
    ]
    for data, message in cases:
        with pytest.raises(MetadataError, match=message):
            read_report(write(tmp_path, data), 1 << 20)
    with pytest.raises(MetadataError, match="over the configured limit"):
        read_report(write(tmp_path, report_zip([good] * 50)), 1000)


def test_rows_of_other_identifiers_are_skipped_before_they_are_checked(tmp_path):
    mine = report_row(0, IMG.format(0), ANN.format(0))
    theirs = {**report_row(1, IMG.format(1), None, broken="true"), "identifier": "other"}
    unchecked = {**report_row(2, IMG.format(2), None), "identifier": "other"}  # no annotation
    report = read_report(
        write(tmp_path, report_zip([mine, theirs, unchecked])), 1 << 20, "3D_example"
    )
    assert len(report.good) == 1 and report.broken == [] and report.other == 2
    with pytest.raises(MetadataError, match="row 4: the annotation cell is not JSON"):
        read_report(write(tmp_path, report_zip([mine, theirs, unchecked])), 1 << 20)
