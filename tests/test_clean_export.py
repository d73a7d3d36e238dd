"""clean-annotations, export-npz and folder exports on a small real store."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from lxml import etree
from PIL import Image

from stages.core.config import Aspect
from stages.core.executor import LocalExecutor
from stages.core.store import Row, Store, rebase, write_manifest, write_store
from stages.export_folders import export_folders
from stages.families.clean import ImageCleaner
from stages.families.export import fit
from stages.pipeline.compose import group_defaults
from stages.sources.lila import SOURCE as LILA
from tests.conftest import lila_conf
from tests.families import clean, export, export_splits

NAMES = ["deer", "cougar", "empty"]


def jpeg(w, h, color):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def fetched(tmp_path) -> Store:
    blobs = {
        "a": jpeg(200, 100, (200, 10, 10)),
        "b": jpeg(100, 200, (10, 200, 10)),
        "c": jpeg(50, 50, (10, 10, 200)),
        "bad": jpeg(80, 80, (1, 2, 3))[:300],  # cut short: fails a full decode
    }
    rows = [
        Row(
            "t/a",
            "t",
            "a",
            url="http://h/a.jpg",
            width=200,
            height=100,
            labels=["deer"],
            boxes=[
                {"label": "deer", "x": -10.0, "y": 10.0, "w": 60.0, "h": 200.0},
                {"label": "deer", "x": 150.0, "y": 50.0, "w": 0.5, "h": 30.0},
            ],
        ),
        Row(
            "t/b",
            "t",
            "b",
            url="http://h/b.jpg",
            width=50,
            height=100,  # metadata is 2x off
            labels=["cougar", "deer"],
            boxes=[{"label": "cougar", "x": 10.0, "y": 10.0, "w": 20.0, "h": 40.0}],
        ),
        Row("t/c", "t", "c", url="http://h/c.jpg", labels=["empty"]),
        Row("t/bad", "t", "bad", url="http://h/bad.jpg", labels=["deer"]),
        Row(
            "t/gone",
            "t",
            "gone",
            url="http://h/gone.jpg",
            labels=["deer"],
            status="missing",
            reason="http 404",
        ),
        Row("t/moose", "t", "m", url="http://h/c.jpg", labels=["moose"]),
    ]
    paths = {}
    for key, data in blobs.items():
        p = tmp_path / f"{key}.jpg"
        p.write_bytes(data)
        paths[f"t/{key}"] = p
    paths["t/moose"] = paths["t/c"]
    for n, r in enumerate(rows):
        r.meta["location"] = f"site{n % 3}"  # what splits group camera-trap images by
        if r.item_id in paths:
            r.sha256 = hashlib.sha256(paths[r.item_id].read_bytes()).hexdigest()
    write_store(
        tmp_path / "fetch", rows, lambda r: paths.get(r.item_id), 1 << 20, executor=LocalExecutor(2)
    )
    return Store(tmp_path / "fetch")


def cleaned(fetched, tmp_path, source=LILA, **cfg) -> Store:
    settings = group_defaults("clean", **{"decode_check": True, "min_box_size": 2.0, **cfg})
    rows, _, metrics, _ = clean(
        fetched, source, lila_conf(NAMES), settings, group_defaults("split")
    )
    out = tmp_path / "clean"
    out.mkdir(exist_ok=True)
    write_manifest(out, rebase(rows, fetched.root, out))
    return Store(out), metrics


def test_clean_drops_bad_items_and_fixes_boxes(fetched, tmp_path):
    store, m = cleaned(fetched, tmp_path)
    assert [r.item_id for r in store.rows()] == ["t/a", "t/b", "t/c"]
    assert m["dropped"] == {"corrupt_image": 1, "missing_at_fetch": 1, "unlabeled": 1}
    assert (m["boxes_in"], m["boxes_out"], m["boxes_clamped"], m["boxes_dropped_degenerate"]) == (
        3,
        2,
        1,
        1,
    )
    a, b, c = store.rows()
    assert a.boxes == [{"label": "deer", "x": 0.0, "y": 10.0, "w": 50.0, "h": 90.0}]
    # Metadata said 50x100 but the file is 100x200: boxes scale with the real size.
    assert (b.width, b.height) == (100, 200) and m["size_mismatch"] == 1
    assert b.boxes == [{"label": "cougar", "x": 20.0, "y": 20.0, "w": 40.0, "h": 80.0}]
    assert (b.labels, b.label_ids) == (["deer", "cougar"], [0, 1])
    assert c.label_ids == [2] and m["classes"] == {"deer": 2, "cougar": 1, "empty": 1}
    assert store.read("t/a") == fetched.read("t/a")


def test_fit_modes():
    assert fit((200, 100), (100, 100), Aspect.stretch) == (0.5, 1.0, (100, 100), (0, 0))
    assert fit((200, 100), (100, 100), Aspect.pad) == (0.5, 0.5, (100, 50), (0, 25))
    assert fit((200, 100), (100, 100), Aspect.crop) == (1.0, 1.0, (200, 100), (-50, 0))


@pytest.mark.parametrize("aspect", ["pad", "stretch", "crop"])
def test_export_npz_loads_with_plain_numpy_and_is_deterministic(fetched, tmp_path, aspect):
    store, _ = cleaned(fetched, tmp_path)
    cfg = group_defaults("export", height=32, width=48, aspect=aspect, items_per_shard=2)
    rows = store.rows()
    m1 = export(rows, store, NAMES, cfg, tmp_path / "npz1")
    export(rows, store, NAMES, cfg, tmp_path / "npz2")
    files = sorted(p.name for p in (tmp_path / "npz1").iterdir())
    assert files == ["shard-00000.npz", "shard-00001.npz"] and m1["items"] == 3
    for name in files:
        assert (tmp_path / "npz1" / name).read_bytes() == (tmp_path / "npz2" / name).read_bytes()
    z = np.load(tmp_path / "npz1" / "shard-00000.npz", allow_pickle=False)
    assert z["X"].shape == (2, 32, 48, 3) and z["X"].dtype == np.uint8
    assert list(z["ids"]) == ["t/a", "t/b"] and list(z["classes"]) == NAMES
    assert list(z["y"]) == [0, 0] and z["labels"].tolist() == [[1, 0, 0], [1, 1, 0]]
    assert z["box_offsets"].tolist() == [0, 1, 2] and z["box_labels"].tolist() == [0, 1]
    boxes = z["boxes"]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 48 + 1e-4).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 3] <= 32 + 1e-4).all()
    if aspect == "pad":
        # 200x100 -> 48x24 centred at y=4; box (0,10,50,90) clamps to the image band.
        np.testing.assert_allclose(
            boxes[0], [0, 4 + 10 * 0.24, 50 * 0.24, 24 - 10 * 0.24], atol=1e-4
        )
        assert z["X"][0, 0, 0].tolist() == [0, 0, 0]  # padding
        assert z["X"][0, 16, 24, 0] > 150  # the red image
    if aspect == "stretch":
        np.testing.assert_allclose(boxes[0], [0, 3.2, 12, 28.8], atol=1e-4)


def test_folder_exports(fetched, tmp_path):
    store, _ = cleaned(fetched, tmp_path)
    assert export_folders(store, tmp_path / "classes", "classes") == 3
    by_class = {p.parent.name for p in (tmp_path / "classes").rglob("*.jpg")}
    assert by_class == {"deer", "cougar", "empty"}
    assert len(list((tmp_path / "classes" / "deer").iterdir())) == 2
    export_folders(store, tmp_path / "voc", "voc")
    images = sorted((tmp_path / "voc" / "JPEGImages").iterdir())
    xmls = sorted((tmp_path / "voc" / "Annotations").iterdir())
    assert [p.stem for p in images] == [p.stem for p in xmls]
    doc = etree.parse(str(xmls[0]))
    assert doc.findtext("size/width") == "200"
    assert doc.findtext("object/name") == "deer"
    assert doc.findtext("object/bndbox/xmin") == "1"
    assert doc.findtext("object/bndbox/ymax") == "100"
    assert images[0].read_bytes() == store.read("t/a")


class CougarCleaner(ImageCleaner):
    """A cleaner whose hook drops one class."""

    def clean_rows(self, cfg, rows, counts):
        counts["cougars_dropped"] += sum("cougar" in r.labels for r in rows)
        return [r for r in rows if "cougar" not in r.labels]


class DropsCougars(type(LILA)):
    """A source whose cleaner drops one class."""

    def cleaner(self):
        return CougarCleaner()


def test_a_source_cleaning_hook_runs_after_the_shared_checks(fetched, tmp_path):
    store, m = cleaned(fetched, tmp_path, source=DropsCougars())
    assert [r.item_id for r in store.rows()] == ["t/a", "t/c"]
    assert m["dropped"]["by_source"] == 1 and m["source"] == {"cougars_dropped": 1}


def test_voc_export_survives_control_characters_in_ids_and_labels(tmp_path):
    src = tmp_path / "x.jpg"
    src.write_bytes(jpeg(20, 10, (1, 2, 3)))
    nasty = "cam\x01\x1b[31m\x00id\ufffe"
    row = Row(
        f"t/{nasty}",
        "t",
        nasty,
        url="http://h/x.jpg",
        width=20,
        height=10,
        labels=["de\x07er"],
        boxes=[{"label": "de\x07er", "x": 1.0, "y": 1.0, "w": 5.0, "h": 5.0}],
    )
    write_store(tmp_path / "s", [row], lambda r: src, 1 << 20, executor=LocalExecutor(2))
    assert export_folders(Store(tmp_path / "s"), tmp_path / "voc", "voc") == 1
    (xml,) = (tmp_path / "voc" / "Annotations").iterdir()
    doc = etree.parse(str(xml))  # well-formed XML
    assert doc.findtext("source/id") == "cam\\x01\\x1b[31m\\x00id\\ufffe"
    assert doc.findtext("object/name") == "de\\x07er"
    assert "/" not in xml.name and xml.parent == tmp_path / "voc" / "Annotations"


def test_export_writes_one_set_of_shards_per_split(fetched, tmp_path):
    store, _ = cleaned(fetched, tmp_path)
    splits = group_defaults("split").names
    cfg = group_defaults("export", height=16, width=16, items_per_shard=2)
    m = export_splits(store, LILA, lila_conf(NAMES), cfg, tmp_path / "npz", splits)
    want = {s: sorted(r.item_id for r in store.rows() if r.split == s) for s in splits}
    for split in splits:
        got = []
        for path in sorted((tmp_path / "npz" / split).glob("shard-*.npz")):
            with np.load(path, allow_pickle=False) as z:
                got += list(z["ids"])
        assert sorted(got) == want[split] and m["splits"][split]["items"] == len(got)
    assert m["items"] == sum(len(v) for v in want.values()) == len(store.rows())


def camera_trap_store(root, locations: range) -> Store:
    """Write a fetched store of 3 images per location, labelled in turn."""
    image = root / "img.jpg"
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(jpeg(32, 24, (90, 120, 30)))
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    rows = [
        Row(
            f"loc{loc:03d}/{k}",
            "t",
            f"{loc}/{k}",
            url=f"http://h/{loc}/{k}.jpg",
            sha256=sha,
            labels=[NAMES[(loc + k) % 2]],
            meta={"location": f"site{loc:03d}", "seq_id": f"site{loc:03d}_{k}"},
        )
        for loc in locations
        for k in range(3)
    ]
    write_store(root / "fetch", rows, lambda r: image, 1 << 20, executor=LocalExecutor(2))
    return Store(root / "fetch")


def test_new_locations_upstream_never_move_an_existing_item(tmp_path):
    settings = (group_defaults("clean", decode_check=False), group_defaults("split"))
    first, _, m1, _ = clean(camera_trap_store(tmp_path / "a", range(100)), LILA,
                         lila_conf(NAMES), *settings)  # fmt: skip
    # 10% more locations upstream, their images among the old ones.
    again, _, m2, _ = clean(camera_trap_store(tmp_path / "b", range(110)), LILA,
                         lila_conf(NAMES), *settings)  # fmt: skip
    before = {r.item_id: r.split for r in first}
    after = {r.item_id: r.split for r in again}
    assert len(before) == 300 and len(after) == 330
    assert all(after[i] == s for i, s in before.items())
    # Near copies stay together: one location, one split.
    assert {(r.meta["location"], r.split) for r in again} == {
        (r.meta["location"], r.split) for r in again if r.item_id.endswith("/0")
    }
    assert sum(m2["splits"]["groups"].values()) == 110 and set(m2["splits"]["items"]) == set(
        settings[1].names
    )
