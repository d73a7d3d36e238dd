"""LILA source: index CSV, metadata zip/JSON, class matching, seeded selection."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest

from stages.core.errors import ConfigError, MetadataError
from stages.core.selection import match_names
from stages.formats import coco_ct
from stages.sources.lila.index import Entry, parse_index
from stages.sources.lila.rows import ClassSelector, build_rows
from tests.conftest import lila_conf

CATS = [
    {"id": 0, "name": "empty", "common name": "empty"},
    {"id": 1, "name": "odocoileus hemionus", "common name": "mule deer"},
    {"id": 2, "name": "puma concolor", "common name": "cougar"},
    {"id": 3, "name": "meleagris gallopavo", "common name": "wild turkey"},
]


def doc(n=40, start=0, cats=CATS, extra_ann=()):
    images = [
        {
            "id": f"img{i:04d}",
            "file_name": f"part0/sub000/img{i:04d}.jpg",
            "width": 640,
            "height": 480,
            "location": str(i % 3),
            "datetime": "2012-05-04 10:22:31",
        }
        for i in range(start, start + n)
    ]
    anns = [
        {"id": f"a{i}", "image_id": f"img{i:04d}", "category_id": i % 4}
        for i in range(start, start + n)
    ]
    return {
        "images": images,
        "info": {"version": "1"},
        "categories": cats,
        "annotations": anns + list(extra_ann),
    }


def cfg(classes=("mule deer", "cougar", "wild turkey", "empty"), **fetch):
    return lila_conf(classes, **fetch)


def scan(d, c=None, **kw):
    """Read and select; returns (meta, selection)."""
    selector = ClassSelector(c or cfg())
    meta, _ = coco_ct.read_metadata(json.dumps(d, indent=1).encode(), selector, **kw)
    return meta, selector.result


def sel_of(d, **c):
    return scan(d, cfg(**c))[1]


def rows_of(d, c, **kw):
    meta, sel = scan(d, c, **kw)
    return build_rows(meta, sel, c.fetch.dataset, "http://h/base", "lila")


# ---------------------------------------------------------------- index CSV

INDEX = (
    "short_name,name,image_base_url_gcp,metadata_url_gcp,image_base_url_aws,metadata_url_aws\n"
    "cct,Caltech Camera Traps,https://g/cct,https://g/cct.zip,http://a/cct,http://a/cct.zip\n"
    "nacti,NACTI,https://g/nacti-unzipped/,https://g/nacti.zip,http://a/n,http://a/n.zip\n"
)


def test_index_is_read_by_column_name():
    entry = parse_index(INDEX, "NACTI", "gcp")
    assert entry == Entry("NACTI", "https://g/nacti.zip", "https://g/nacti-unzipped")
    assert parse_index(INDEX, "NACTI", "aws").metadata_url == "http://a/n.zip"


@pytest.mark.parametrize(
    "text, match",
    [
        ("name,foo\nNACTI,1\n", "lacks column"),
        (INDEX + "broken,row\n", "wrong number of fields"),
        (INDEX.replace("https://g/nacti.zip", "ftp://x"), "not an http"),
        ('name,metadata_url_gcp,image_base_url_gcp\n"NACTI,x,y\n', "malformed|fields"),
    ],
)
def test_malformed_index_is_a_clear_error(text, match):
    with pytest.raises(MetadataError, match=match):
        parse_index(text, "NACTI", "gcp")


def test_unknown_dataset_and_cloud():
    with pytest.raises(ConfigError, match="close matches: NACTI"):
        parse_index(INDEX, "NACTl", "gcp")
    with pytest.raises(ConfigError, match=r"fetch.cloud.*expected one of \[gcp, aws, azure\]"):
        cfg(cloud="ibm")


# ---------------------------------------------------------------- metadata files


def write_zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_metadata_zip_checks(tmp_path):
    good = json.dumps(doc(3)).encode()
    path = write_zip(tmp_path / "ok.zip", {"m.json": good})
    opener, _ = coco_ct.open_document(path, 10**9)
    meta, _ = coco_ct.read_metadata(opener, ClassSelector(cfg()))
    assert meta.n_images == 3
    cases = {
        "none.zip": ({"readme.txt": b"hi"}, "exactly one .json"),
        "two.zip": ({"a.json": good, "b.json": good}, "exactly one .json"),
        "evil.zip": ({"../evil.json": good}, "unsafe member"),
        "abs.zip": ({"/etc/evil.json": good}, "unsafe member"),
    }
    for name, (members, match) in cases.items():
        with pytest.raises(MetadataError, match=match):
            coco_ct.open_document(write_zip(tmp_path / name, members), 10**9)
    with pytest.raises(MetadataError, match="limit"):
        coco_ct.open_document(tmp_path / "ok.zip", 100)
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(MetadataError):
        coco_ct.open_document(tmp_path / "junk.zip", 10**9)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d["images"][1].update(file_name="../../etc/passwd"), "unsafe file_name"),
        (lambda d: d["images"][1].update(file_name="/etc/passwd"), "unsafe file_name"),
        (lambda d: d["images"][1].update(file_name="C:\\x.jpg"), "unsafe file_name"),
        (lambda d: d["images"][1].pop("file_name"), "file_name"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2]), "bbox"),
        (lambda d: d.update(categories=[]), "no categories"),
        (lambda d: d["images"][1].update(width="wide"), "width"),
        (  # a relative box on an image whose width is text: no string repetition, an error
            lambda d: (
                d["images"][1].update(width="w" * 10),
                d["annotations"][1].update(bbox_relative=[10**9, 0.1, 0.1, 0.1]),
            ),
            "width must be a number",
        ),
    ],
)
def test_bad_metadata_is_a_clear_error(mutate, match):
    d = doc(5)
    mutate(d)
    with pytest.raises(MetadataError, match=match):
        rows_of(d, cfg())


def test_malformed_and_oversized_json():
    with pytest.raises(MetadataError):
        cut = b'{"images": [{"id": "a", "file_name": "x.jpg"},'
        coco_ct.read_metadata(cut, ClassSelector(cfg()))
    big = json.dumps(doc(200)).encode()
    with pytest.raises(MetadataError, match="limit"):
        coco_ct.read_metadata(big, ClassSelector(cfg()), max_bytes=len(big) // 2)


@pytest.mark.parametrize(
    "order",
    [
        ("images", "info", "categories", "annotations"),
        ("info", "categories", "annotations", "images"),
        ("annotations", "images", "categories", "info"),
    ],
)
def test_any_key_order_gives_the_same_rows(order):
    d = doc(
        30, extra_ann=[{"id": "b", "image_id": "img0001", "category_id": 1, "bbox": [1, 2, 3, 4]}]
    )
    want = [r.to_record() for r in rows_of(d, cfg(cap=4))]
    d2 = {k: d[k] for k in order}
    assert [r.to_record() for r in rows_of(d2, cfg(cap=4))] == want
    # The same with the images array read by a second process.
    rows = rows_of(d2, cfg(cap=4), parallel=True)
    assert [r.to_record() for r in rows] == want


def test_parallel_reader_reports_bad_images():
    d = doc(10)
    del d["images"][3]["id"]
    with pytest.raises(MetadataError, match="lacks an id"):
        coco_ct.read_metadata(json.dumps(d).encode(), ClassSelector(cfg()), parallel=True)


# ---------------------------------------------------------------- classes and selection


def test_classes_match_common_or_scientific_names():
    index = coco_ct.category_index(CATS)
    got = match_names(index, ["Mule Deer", "puma concolor", "empty"])
    assert got == {"Mule Deer": {1}, "puma concolor": {2}, "empty": {0}}
    with pytest.raises(ConfigError, match=r"'mule dear' \(close: mule deer"):
        match_names(index, ["mule dear", "cougar"])


def test_caps_are_seeded_and_stable_when_images_are_added():
    first = sel_of(doc(80), cap=5)
    assert first.stats["selected"] == {"mule deer": 5, "cougar": 5, "wild turkey": 5, "empty": 5}
    assert first.stats["available"]["cougar"] == 20
    again = sel_of(doc(80), cap=5)
    assert again.order == first.order
    other_seed = sel_of(doc(80), cap=5, seed=1)
    assert other_seed.order != first.order
    # 8 more images upstream: old picks stay unless a new image outranks them.
    grown = doc(80)
    more = doc(8, start=80)
    grown["images"] += more["images"]
    grown["annotations"] += more["annotations"]
    second = sel_of(grown, cap=5)
    old, new = set(first.order), set(second.order)
    added = {i for i in new if int(i[3:]) >= 80}
    assert new - added <= old
    assert len(old - new) == len(added)
    assert len(old & new) >= 14  # most picks survive


def test_per_class_caps_and_unknown_cap_names():
    sel = sel_of(doc(80), cap=None, caps={"empty": 2, "Cougar": 3})
    assert sel.stats["selected"] == {"mule deer": 20, "cougar": 3, "wild turkey": 20, "empty": 2}
    with pytest.raises(ConfigError, match="caps name classes not in"):
        cfg(caps={"moose": 1})


def test_a_cap_bounds_the_picks_while_other_picks_may_carry_the_label():
    # Every mule deer image (category 1) also shows a cougar: cougar images picked for
    # mule deer carry the cougar label beyond cougar's own cap.
    both = [{"id": f"b{i}", "image_id": f"img{i:04d}", "category_id": 2} for i in range(1, 80, 4)]
    sel = sel_of(doc(80, extra_ann=both), cap=5)
    assert sel.stats["picked"] == {"mule deer": 5, "cougar": 5, "wild turkey": 5, "empty": 5}
    assert sel.stats["selected"]["cougar"] > 5
    assert sel.stats["selected"]["cougar"] <= 10
    assert {k: v for k, v in sel.stats["selected"].items() if k != "cougar"} == {
        "mule deer": 5,
        "wild turkey": 5,
        "empty": 5,
    }


def test_byte_budget_stops_selection_fairly():
    sel = sel_of(doc(80), byte_budget=1000, est_bytes_per_image=100)
    assert len(sel.order) == 10
    assert sel.stats["budget_exhausted"] and sel.stats["budget_dropped"] == 70
    assert sorted(sel.stats["selected"].values()) == [2, 2, 3, 3]  # round-robin by rank


def test_rows_carry_boxes_sizes_and_metadata():
    d = doc(
        8,
        extra_ann=[
            {"id": "b1", "image_id": "img0001", "category_id": 1, "bbox": [10, 20, 30, 40]},
            {
                "id": "b2",
                "image_id": "img0001",
                "category_id": 2,
                "bbox_relative": [0.5, 0.5, 0.1, 0.1],
            },
        ],
    )
    d["images"][5]["corrupt"] = True
    c = cfg(classes=["mule deer", "cougar", "wild turkey"])
    rows = {r.source_id: r for r in rows_of(d, c)}
    r = rows["img0001"]
    assert r.url == "http://h/base/part0/sub000/img0001.jpg"
    assert r.labels == ["mule deer", "cougar"] and (r.width, r.height) == (640, 480)
    assert r.boxes == [
        {"label": "mule deer", "x": 10.0, "y": 20.0, "w": 30.0, "h": 40.0},
        {"label": "cougar", "x": 320.0, "y": 240.0, "w": 64.0, "h": 48.0},
    ]
    assert r.meta == {
        "dataset": "T",
        "file_name": "part0/sub000/img0001.jpg",
        "location": "1",
        "datetime": "2012-05-04 10:22:31",
    }
    assert rows["img0005"].status == "corrupt"
    assert "img0000" not in rows  # empty is not among these classes


def test_integer_ids_from_older_datasets():
    d = doc(12)
    for i, im in enumerate(d["images"]):
        im["id"] = 1000 + i
    for i, a in enumerate(d["annotations"]):
        a["image_id"] = 1000 + i
    rows = rows_of(d, cfg(cap=2))
    assert len(rows) == 8 and all(r.source_id.isdigit() for r in rows)
    assert rows[0].item_id == f"T/{rows[0].source_id}"


# ---------------------------------------------------------------- file names in URLs


ODD_NAMES = [
    "odd/with space.jpg",
    "odd/hash#tag.jpg",
    "odd/per%25cent%.jpg",
    "odd/what?now.jpg",
    "odd/caf\u00e9 \u5730\u56f3.jpg",
    "odd/plus+semi;colon.jpg",
]


def test_file_names_are_percent_encoded_and_fetch_the_right_object(tmp_path):
    from stages.core.executor import LocalExecutor
    from stages.fetch import fetch
    from stages.pipeline.compose import group_defaults
    from stages.sources.lila import SOURCE
    from standins.lila import LilaStandin

    root = tmp_path / "root"
    blobs = {}
    for i, name in enumerate(ODD_NAMES):
        data = b"\xff\xd8" + f"image {i}".encode() * 50 + b"\xff\xd9"
        path = root / "odd-unzipped" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        blobs[f"odd{i}"] = data
    d = {
        "info": {"version": "1"},
        "categories": CATS,
        "images": [{"id": f"odd{i}", "file_name": n} for i, n in enumerate(ODD_NAMES)],
        "annotations": [
            {"id": f"a{i}", "image_id": f"odd{i}", "category_id": 1} for i in range(len(ODD_NAMES))
        ],
    }
    (root / "odd").mkdir()
    write_zip(root / "odd" / "meta.zip", {"meta.json": json.dumps(d).encode()})
    entry = {
        "name": "ODD",
        "slug": "odd",
        "image_base_relative": "odd-unzipped",
        "metadata_path": "odd/meta.zip",
    }
    with LilaStandin(root, datasets=[entry]) as srv:
        cfg = lila_conf(["mule deer"], index_url=srv.index_url, dataset="ODD")
        rows, metrics = fetch(
            SOURCE,
            cfg,
            group_defaults("fetch"),
            group_defaults("store"),
            tmp_path / "out",
            tmp_path / "cache",
            executor=LocalExecutor(2),
        )
    assert metrics["ok"] == len(ODD_NAMES), metrics["reasons"]
    by_id = {r.source_id: r for r in rows}
    for image_id, data in blobs.items():
        assert by_id[image_id].sha256 == hashlib.sha256(data).hexdigest(), by_id[image_id].url
    assert by_id["odd3"].url.endswith("/odd/what%3Fnow.jpg")
    assert by_id["odd2"].url.endswith("/odd/per%2525cent%25.jpg")
